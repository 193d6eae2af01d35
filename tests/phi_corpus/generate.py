"""Write the PHI guard's labelled synthetic corpus: tests/phi_corpus/corpus.jsonl.

Every sentence is made here from templates and invented values (fixed seed, so the file is
the same on every run): positives of each kind the guard names, in the forms clinicians and
systems write them (including forms the guard is known to miss, so recall is honest), hard
negatives that look like identifiers but are not (versions, prices, code, ICD and CPT
codes, times, ratios, lab values, doses, ages under 90, bare years), sentences with several
kinds, and identifiers hidden with zero-width or full-width characters. No value belongs to
a real person: names come from short lists of common names, numbers are random.

One JSON object a line: ``{"text": ..., "spans": [[kind, start, end], ...]}``, the offsets
into ``phi.normalise(text)`` (the text itself, unless it has zero-width or full-width
characters).

Run:  .venv/bin/python tests/phi_corpus/generate.py
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from citadel_runtime.gateway.phi import normalise  # noqa: E402

CORPUS = Path(__file__).with_name("corpus.jsonl")
SEED = 15
FIRST = ["James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda", "David", "Susan",
         "Maria", "Wei", "Fatima", "Carlos", "Aisha", "Olga", "Kenji", "Priya", "Ahmed", "Sofia"]
LAST = ["Smith", "Johnson", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Lee", "Nguyen", "Patel",
        "O'Brien", "Kowalski", "Okafor", "Schmidt", "Rossi", "Haddad", "Tanaka", "Brown-Wilson", "Cohen", "Silva"]
STREETS = ["Oak", "Maple", "Cedar", "Elm", "Pine", "Main", "Lake", "Hill", "Washington", "Park", "Sunset", "River"]
STREET_TYPES = ["Street", "St", "Avenue", "Ave", "Road", "Rd", "Boulevard", "Lane", "Drive", "Court", "Way", "Place"]
MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December"]
DOMAINS = ["example.org", "mail.example.com", "hospital.example.net", "clinic.example.co.uk", "example.edu"]
MBI_LETTERS = "ACDEFGHJKMNPQRTUVWXY"


class Maker:
    """Invented identifiers of each kind, in the forms they are written."""

    def __init__(self, rng: random.Random):
        self.rng = rng

    def pick(self, options):
        return self.rng.choice(options)

    def digits(self, n: int) -> str:
        return "".join(self.rng.choice("0123456789") for _ in range(n))

    def first(self) -> str:
        return self.pick(FIRST)

    def last(self) -> str:
        return self.pick(LAST)

    def email(self) -> str:
        user = self.pick([f"{self.first()}.{self.last()}", f"{self.first()[0]}{self.last()}{self.digits(2)}",
                          f"{self.first()}_{self.digits(3)}", f"{self.first()}+clinic"])
        return f"{user.lower().replace(chr(39), '')}@{self.pick(DOMAINS)}"

    def ssn(self) -> str:
        area = self.rng.choice([n for n in range(1, 900) if n != 666])
        sep = self.pick(["-", "-", "-", " "])
        return f"{area:03d}{sep}{self.rng.randint(1, 99):02d}{sep}{self.rng.randint(1, 9999):04d}"

    def mbi(self) -> str:
        def alnum():
            return self.pick(MBI_LETTERS + "0123456789")
        raw = (f"{self.rng.randint(1, 9)}{self.pick(MBI_LETTERS)}{alnum()}{self.digits(1)}"
               f"{self.pick(MBI_LETTERS)}{alnum()}{self.digits(1)}{self.pick(MBI_LETTERS)}{self.pick(MBI_LETTERS)}"
               f"{self.digits(2)}")
        return self.pick([raw, f"{raw[:4]}-{raw[4:7]}-{raw[7:]}"])

    def member_id(self) -> str:
        return self.pick([f"{self.pick(['XJ', 'W', 'ZGP', 'H'])}{self.digits(8)}", self.digits(11),
                          f"{self.digits(5)}-{self.pick(['A', 'B', '01'])}{self.digits(2)}"])

    def mrn(self) -> str:
        return self.pick([self.digits(8), self.digits(7), f"{self.pick(['AB', 'M', 'HX'])}{self.digits(7)}"])

    def phone(self) -> str:
        a, b, c = self.rng.randint(201, 989), self.rng.randint(200, 999), self.digits(4)
        return self.pick([f"({a}) {b}-{c}", f"{a}-{b}-{c}", f"{a}.{b}.{c}", f"+1 {a} {b} {c}", f"1-{a}-{b}-{c}",
                          f"+44 20 {self.digits(4)} {self.digits(4)}", f"+49 30 {self.digits(8)}"])

    def date(self) -> str:
        y, m, d = self.rng.randint(1930, 2025), self.rng.randint(1, 12), self.rng.randint(1, 28)
        month = MONTHS[m - 1]
        return self.pick([f"{m:02d}/{d:02d}/{y}", f"{m}/{d}/{y % 100:02d}", f"{y}-{m:02d}-{d:02d}",
                          f"{month} {d}, {y}", f"{month[:3]} {d}", f"{d} {month} {y}", f"{d:02d}.{m:02d}.{y}",
                          f"{month} {d}{self.ordinal(d)}", f"{d}{self.ordinal(d)} of {month}", f"{d:02d}-{m:02d}-{y}"])

    @staticmethod
    def ordinal(day: int) -> str:
        return "th" if 10 <= day % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")

    def old_age(self) -> str:
        age = self.rng.randint(90, 104)
        return self.pick([f"{age}-year-old", f"{age} years old", f"age {age}", f"aged {age}", f"{age} y/o",
                          f"{age}yo", f"Age: {age}"])

    def address(self) -> str:
        number = self.rng.randint(1, 9999)
        street = self.pick(STREETS) if self.rng.random() < 0.7 else f"{self.pick(STREETS)} {self.pick(STREETS)}"
        direction = self.pick(["", "", "", "N ", "W. "])
        return f"{number} {direction}{street} {self.pick(STREET_TYPES)}"

    def titled_name(self) -> str:
        title = self.pick(["Dr.", "Dr", "Mrs.", "Mr.", "Ms.", "Prof."])
        return self.pick([f"{title} {self.last()}", f"{title} {self.first()} {self.last()}"])

    def bare_name(self) -> str:
        return f"{self.first()} {self.last()}"

    def ssn_digits(self) -> str:
        return self.ssn().replace("-", "").replace(" ", "")

    def phone_digits(self) -> str:
        return f"{self.rng.randint(201, 989)}{self.digits(7)}"

    def month_year(self) -> str:
        return f"{self.pick(MONTHS)} {self.rng.randint(1990, 2025)}"

    def lettered_address(self) -> str:
        return f"{self.rng.randint(1, 400)}{self.pick('ABC')} {self.pick(STREETS)} Street"

    def spelled_age(self) -> str:
        return f"ninety-{self.pick(['one', 'two', 'five', 'eight'])} years old"

    def labelled_name(self) -> str:
        label = self.pick(["patient", "Patient", "Name", "Patient Name", "pt", "Next of kin", "Guardian"])
        return f"{label}: {self.first()} {self.last()}"


# kind: templates, {v} where the identifier goes. The span is the identifier; a finding that
# overlaps it counts (the guard's own findings include labels such as "MRN: ").
POSITIVE = {
    "email": ["Please send the results to {v} before Friday.", "Contact: {v}", "The referral came from {v}.",
              "Patient can be reached at {v} or by post.", "cc {v}; {v2}"],
    "ssn": ["SSN {v} on file.", "Social security number: {v}.", "Verified identity with {v} at registration.",
            "Her SSN is {v}, please update the chart."],
    "insurance": ["Medicare MBI {v} is active.", "MBI: {v}", "member ID: {m}", "Policy number {m} covers the stay.",
                  "insurance id {m} was verified", "Medicaid #{m} expired last month.", "Subscriber no. {m}"],
    "mrn": ["MRN: {v}", "MRN {v} admitted to ward 4.", "Medical record number {v} was merged.", "chart #{v} reviewed",
            "MR# {v}", "Patient ID {v} flagged for follow-up."],
    "phone": ["Call {v} to reschedule.", "Daughter's phone: {v}", "Pager/cell {v}", "Fax results to {v}.",
              "Reached the pharmacy at {v} this morning."],
    "date": ["Date of birth {v}.", "Admitted on {v} with chest pain.", "Last seen {v}.", "Surgery scheduled for {v}.",
             "DOB: {v}", "Discharged {v} in stable condition."],
    "age": ["A {v} woman presents with dyspnea.", "The patient is {v} and lives alone.", "{v} male with sepsis.",
            "Resident, {v}, fell at home."],
    "address": ["Lives at {v} with her husband.", "Home address: {v}, apartment 3.", "Transport from {v} arranged.",
                "Mail the letter to {v}."],
    "name": ["Seen today by {v} in clinic.", "{v} reviewed the imaging.", "Discussed with {v} by phone.",
             "Referred to {v} for cardiology follow-up."],
    "labelled-name": ["{v}", "{v}, room 12", "Consent signed. {v}."],
}
# Forms the guard does not find: kept in the corpus so its recall is not flattered.
KNOWN_MISSES = [
    ("name", "{v} was admitted overnight.", "bare_name"), ("name", "Spoke with {v} about the plan.", "bare_name"),
    ("ssn", "SSN {v} verified.", "ssn_digits"), ("phone", "Call back number {v}.", "phone_digits"),
    ("date", "Seen in {v} for the same complaint.", "month_year"), ("address", "Lives at {v}.", "lettered_address"),
    ("mrn", "Record {v} was archived.", "mrn"), ("age", "Patient is {v}.", "spelled_age"),
]
NEGATIVE = [
    "Upgrade the server to version {a}.{b}.{c} tonight.", "Tested with Python 3.11.2 and pip 23.0.1.",
    "The release v{a}.{b2}.{c2} fixes the bug.", "The device costs ${n},{d3}.{d2} per unit.",
    "Co-pay is {d2}.50 EUR per visit.", "x = values[{a}:{b}] + offset", "for i in range({n}): total += i",
    "if (count > {n}) {{ retry = {a}; }}", "SELECT name FROM drugs WHERE id = {n};", "Diagnosis code E11.{a} recorded.",
    "ICD-10 I10 and J45.909 on the problem list.", "ICD-10 S72.001A, CPT 99213.", "LOINC 2345-7 glucose panel.",
    "Meeting at {h}:{mm} in room {n}.", "Dose given at 14:45:00.", "Pain score {a}/10 at rest.",
    "BP {sys}/{dia}, HR {n}, SpO2 97%.", "Ratio 3:1, dilution 1:1000.", "HbA1c {a}.{b}% last quarter.",
    "Creatinine 1.{b} mg/dL, potassium 4.{a} mmol/L.", "Metformin 500 mg BID and lisinopril 10 mg daily.",
    "Give 0.5 mL IM now, repeat in 4 h.", "{n} of 240 patients responded (p < 0.05).", "95% CI 1.{a} to 3.{b}.",
    "A 45-year-old man with asthma.", "Age 62, non-smoker.", "The child is 5 years old.", "Diagnosed in 2019.",
    "Stage 3 disease, T2N1M0.", "GCS 15, pupils equal.", "Variant rs{n7} on chromosome 17q21.31.",
    "NDC 0002-7510-01 dispensed.", "ISBN 978-3-16-148410-0 is the guideline's print edition.",
    "Order #{n} shipped; tracking pending.", "Bed 4B, gauge 18 cannula.", "See pages {n}-{n2} of the protocol.",
    "Follow up in 3 months; recheck labs in 6 weeks.", "Ward 7 census is 24 of 28 beds.",
    "The drive to the clinic takes 20 minutes.", "COVID-19 vaccine lot not recorded.",
    "Temperature 38.{a} C, WBC {b}.{a} x10^9/L.", "Build 2024.{a}.{b} deployed on the lab host.",
    "Weight {n} kg, height 1.{b2} m.", "Q3 2024 report: {n} admissions.", "Use port 8443 and timeout 30 s.",
    "The model has 8 billion parameters and 4096 tokens of context.", "Infusion at 125 mL/h for 8 h.",
    "Call the on-call team via the switchboard.", "Address the wound with saline.", "The doctor will see you now.",
    "Name the three main risk factors.", "Patient education leaflet 12 given.", "Member services updated the policy.",
    "Insurance coverage for the procedure is pending.", "Chart review found no issues.",
    "Pt: Tolerated procedure well.", "Patient: Stable overnight, afebrile.", "Name: Amoxicillin 500 mg capsule",
    "Titrate 5-10-20 mg over three weeks.", "Apgar scores 8/9/10.", "May 3 residents join the round?",
    "Study group 2024-11 enrolled {n} patients.", "Dr. appointment at {h}:{mm}.", "St. Mary's Hospital lab.",
    "Stored for 90 days at 4 C.", "Over 95% of doses given on time.", "Room {n}, Oak wing, level 3.",
]
MIXED = [
    ("Patient: {name} (MRN {mrn}), DOB {date}, phone {phone}.", ["name", "mrn", "date", "phone"]),
    ("{title} called {phone} about SSN {ssn}.", ["name", "phone", "ssn"]),
    ("Send to {email}; member ID: {member} on file since {date}.", ["email", "insurance", "date"]),
    ("{age} seen at {address} by {title}.", ["age", "address", "name"]),
]


def sentence(template: str, values: dict[str, tuple[str, str]]) -> dict:
    """Fill {slot}s; spans of the slots that are identifiers, in order of appearance."""
    text, spans, rest = "", [], template
    while "{" in rest:
        before, _, after = rest.partition("{")
        slot, _, rest = after.partition("}")
        text += before
        value, kind = values[slot]
        if kind:
            spans.append([kind, len(normalise(text)), len(normalise(text + value))])
        text += value
    text += rest
    return {"text": text, "spans": spans}


def positives(make: Maker) -> list[dict]:
    out = []
    makers = {"email": make.email, "ssn": make.ssn, "insurance": make.mbi, "mrn": make.mrn, "phone": make.phone,
              "date": make.date, "age": make.old_age, "address": make.address, "name": make.titled_name,
              "labelled-name": make.labelled_name}
    for kind, templates in POSITIVE.items():
        label = "name" if kind == "labelled-name" else kind
        for index in range(40):
            template = templates[index % len(templates)]
            values = {"v": (makers[kind](), label), "v2": (make.email(), "email"),
                      "m": (make.member_id(), "insurance")}
            out.append(sentence(template, values))
    return out


def known_misses(make: Maker) -> list[dict]:
    out = []
    for index in range(40):
        kind, template, maker = KNOWN_MISSES[index % len(KNOWN_MISSES)]
        out.append(sentence(template, {"v": (getattr(make, maker)(), kind)}))
    return out


def negatives(make: Maker) -> list[dict]:
    out = []
    for index in range(3 * len(NEGATIVE)):
        template = NEGATIVE[index % len(NEGATIVE)]
        rng = make.rng
        text = template.format(a=rng.randint(1, 9), b=rng.randint(0, 9), c=rng.randint(0, 30), b2=rng.randint(10, 12),
                               c2=rng.randint(10, 15), n=rng.randint(11, 999), n2=rng.randint(1000, 1200),
                               d2=f"{rng.randint(10, 99)}", d3=f"{rng.randint(100, 999)}", h=rng.randint(7, 18),
                               mm=f"{rng.choice([0, 15, 30, 45]):02d}", sys=rng.randint(100, 160),
                               dia=rng.randint(60, 95), n7=make.digits(7))
        out.append({"text": text, "spans": []})
    return out


def mixed(make: Maker) -> list[dict]:
    out = []
    for index in range(40):
        template, _ = MIXED[index % len(MIXED)]
        values = {"name": (f"{make.first()} {make.last()}", "name"), "mrn": (make.mrn(), "mrn"),
                  "date": (make.date(), "date"), "phone": (make.phone(), "phone"), "ssn": (make.ssn(), "ssn"),
                  "title": (make.titled_name(), "name"), "email": (make.email(), "email"),
                  "member": (make.member_id(), "insurance"), "age": (make.old_age(), "age"),
                  "address": (make.address(), "address")}
        out.append(sentence(template, values))
    return out


def hidden(make: Maker) -> list[dict]:
    """Identifiers split by zero-width characters or written in full-width digits."""
    out = []
    invisible = ["\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u180e"]
    for index in range(40):
        kind, value = [("ssn", make.ssn()), ("phone", make.phone()), ("mrn", make.mrn()), ("date", make.date()),
                       ("email", make.email())][index % 5]
        if index % 2:
            shown = "".join(c + (make.pick(invisible) if c.isalnum() else "") for c in value).rstrip("".join(invisible))
        else:
            shown = "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" and c not in "@." else c for c in value)
        label = {"ssn": "SSN ", "phone": "call ", "mrn": "MRN ", "date": "DOB ", "email": "mail "}[kind]
        text = f"Note: {label}{shown} confirmed."
        out.append({"text": text, "spans": [[kind, len(normalise(f"Note: {label}")),
                                             len(normalise(f"Note: {label}{shown}"))]]})
    return out


def build() -> list[dict]:
    make = Maker(random.Random(SEED))
    rows = positives(make) + known_misses(make) + negatives(make) + mixed(make) + hidden(make)
    return rows


def main() -> None:
    rows = build()
    CORPUS.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows))
    print(f"{len(rows)} sentences, {sum(len(r['spans']) for r in rows)} identifiers -> {CORPUS}")


if __name__ == "__main__":
    main()
