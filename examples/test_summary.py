"""Summarisation: a three-bullet summary of a short report."""

import pytest

REPORT = (
    "The Q3 migration moved 40 services to the new cluster. Two services, billing and search, "
    "were rolled back after latency doubled under peak load. The database upgrade finished a "
    "week early. Next quarter the team will retry billing and search with connection pooling "
    "and will decommission the old cluster by December."
)


@pytest.mark.model("smollm2@b179c952")
def test_three_bullet_summary(model, golden):
    messages = [
        {"role": "system", "content": "You write concise summaries."},
        {
            "role": "user",
            "content": f"Summarise this report in exactly three bullet points:\n\n{REPORT}",
        },
    ]
    summary = model.chat(messages, max_tokens=96)
    assert summary.text.strip()
    assert summary == golden
