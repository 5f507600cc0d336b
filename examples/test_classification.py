"""Classification: the yes/no and small-label decisions small models are shipped for."""

import pytest

REVIEWS = {
    "glowing": "Arrived a day early, fits perfectly and the battery lasts all week. Love it!",
    "angry": "Broke after two days. Support never answered my emails. Want my money back.",
    "mixed": "Great screen, but the speakers crackle at high volume and the case scratches easily.",
}


@pytest.mark.model("smollm2@b179c952")
@pytest.mark.parametrize("review", REVIEWS.values(), ids=REVIEWS.keys())
def test_review_sentiment(model, golden, review):
    messages = [
        {"role": "system", "content": "You label product reviews as positive or negative."},
        {"role": "user", "content": f"Review: {review}\nIs this review positive or negative?"},
    ]
    label = model.classify(messages, labels=["positive", "negative"])
    assert label in ("positive", "negative")
    assert set(label.logprobs) == {"positive", "negative"}
    assert label == golden


MESSAGES = {
    "outage": "Our whole checkout has been down for an hour and we are losing orders. Call me now.",
    "thanks": "Thanks for the quick fix yesterday, everything works fine now.",
}


@pytest.mark.model("smollm2@b179c952")
@pytest.mark.parametrize("message", MESSAGES.values(), ids=MESSAGES.keys())
def test_needs_escalation(model, golden, message):
    prompt = (
        "Decide whether a customer message must be escalated to an on-call engineer.\n"
        f"Message: {message}\n"
        "Escalate (yes or no):"
    )
    assert model.classify(prompt, labels=[" yes", " no"]) == golden
