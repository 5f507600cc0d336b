"""Quality, not only behaviour: how often the bundled model routes a labelled ticket right, and
how well it extracts invoice fields, with intervals, gated at what it really achieves."""

from pathlib import Path

import pytest

from pytest_smallmodel import load_cases

DATA = Path(__file__).parent / "data"
QUEUES = ["billing", "technical", "account", "shipping"]
INVOICE = {
    "type": "object",
    "properties": {
        "number": {"type": "string"},
        "vendor": {"type": "string"},
        "amount": {"type": "number"},
        "currency": {"type": "string"},
    },
    "required": ["number", "vendor", "amount", "currency"],
    "additionalProperties": False,
}


def route(model, case):
    messages = [
        {
            "role": "system",
            "content": "Route support tickets to one queue: billing, technical, account or "
            "shipping.",
        },
        {"role": "user", "content": f"Ticket: {case.input}\nQueue:"},
    ]
    return model.classify(messages, labels=QUEUES)


def extract_invoice(model, case):
    prompt = f"Extract the invoice number, vendor, amount and currency as JSON.\n{case.input}\n"
    return model.extract(prompt, INVOICE, max_tokens=64)


@pytest.mark.model("smollm2@b179c952")
def test_ticket_routing_accuracy(model):
    report = model.evaluate(load_cases(DATA / "tickets.jsonl"), route, labels=QUEUES)
    print(report.describe())
    # SmolLM2-135M is a weak router: 11 of 40 right, interval 0.16-0.43, "billing" for nearly
    # everything (README). The gate keeps it from getting worse, with room for the near-tie
    # labels that flip from one CPU to another.
    assert report.accuracy.estimate >= 0.2


@pytest.mark.model("smollm2@b179c952")
def test_invoice_extraction_fields(model):
    report = model.evaluate(load_cases(DATA / "invoices.jsonl"), extract_invoice)
    print(report.describe())
    # Amounts it mostly gets (9 of 12 here); invoice numbers it does not (README).
    assert report.fields is not None
    assert report.fields.exact["amount"].estimate >= 0.5
