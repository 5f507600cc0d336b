"""Routing / intent detection: send a ticket to the right queue."""

import pytest

QUEUES = ["billing", "technical", "account", "other"]

TICKETS = {
    "refund": "I was charged twice for my subscription this month, please refund one payment.",
    "crash": "The app crashes every time I open the settings page on Android 14.",
    "password": "I can't log in, the password reset email never arrives.",
}


@pytest.mark.model("smollm2@b179c952")
@pytest.mark.parametrize("ticket", TICKETS.values(), ids=TICKETS.keys())
def test_route_ticket(model, golden, ticket):
    messages = [
        {
            "role": "system",
            "content": "Route support tickets to one queue: billing, technical, account or other.",
        },
        {"role": "user", "content": f"Ticket: {ticket}\nQueue:"},
    ]
    queue = model.classify(messages, labels=QUEUES)
    assert queue in QUEUES
    assert queue == golden
