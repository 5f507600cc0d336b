"""JSON-to-schema conversion: reshape a legacy record into a new schema."""

import json

import pytest

LEGACY = {
    "cust_name": "Maria Lopez",
    "cust_mail": "maria.lopez@example.com",
    "sub_tier": "PRO",
    "active_flag": "Y",
}

TARGET_SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "email": {"type": "string"},
        "plan": {"type": "string", "enum": ["free", "pro", "enterprise"]},
        "active": {"type": "boolean"},
    },
    "required": ["name", "email", "plan", "active"],
    "additionalProperties": False,
}


@pytest.mark.model("smollm2@b179c952")
def test_convert_customer_record(model, golden):
    prompt = (
        "Convert the legacy customer record to the new format "
        "(fields name, email, plan, active).\n"
        f"Legacy record: {json.dumps(LEGACY)}\n"
        "New record: "
    )
    record = model.extract(prompt, TARGET_SCHEMA, max_tokens=80)
    assert record["plan"] in ("free", "pro", "enterprise")
    assert record == golden
