"""Structured extraction: fields from an invoice, constrained by a JSON Schema."""

import pytest

INVOICE = """ACME Office Supplies
12 Harbour Road, Bristol BS1 4QA
Invoice no. 2024-118      Date: 14 March 2024
3 x Printer paper (A4)      £18.00
1 x Stapler                  £7.50
Total due: £25.50
"""

INVOICE_SCHEMA = {
    "type": "object",
    "properties": {
        "address": {"type": "string"},
        "date": {"type": "string"},
        "total": {"type": "number"},
    },
    "required": ["address", "date", "total"],
    "additionalProperties": False,
}


@pytest.mark.model("smollm2@b179c952")
def test_invoice_fields(model, golden):
    messages = [
        {"role": "system", "content": "Extract fields from invoices as JSON."},
        {"role": "user", "content": f"{INVOICE}\nGive the sender address, the date and the total."},
    ]
    invoice = model.extract(messages, INVOICE_SCHEMA, max_tokens=96)
    assert set(invoice) == {"address", "date", "total"}
    assert isinstance(invoice["total"], int | float)
    assert invoice == golden
