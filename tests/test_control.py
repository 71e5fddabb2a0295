"""Request control's bookkeeping (console/control.py), without consoles: what a page's poll reads."""

from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from console.control import ASK_SECONDS, control_state
from console.models import ControlHandover


def test_a_request_nobody_answered_lapses_for_the_poll_without_a_write(make_vm, user, other_user):
    vm = make_vm()
    fresh = ControlHandover.objects.create(vm=vm, requester=other_user, requester_session="s-other")
    stale = ControlHandover.objects.create(vm=vm, requester=other_user, requester_session="s-old")
    ControlHandover.objects.filter(pk=stale.pk).update(
        asked_at=timezone.now() - timedelta(seconds=ASK_SECONDS + 1)
    )
    with CaptureQueriesContext(connection) as queries:
        state = control_state(user=user, vm=vm, session_key="s-owner", watching=False)
    assert state["input"] is True
    assert state["requests"] == [{"id": fresh.pk, "user": other_user.username}]  # not the stale one
    # A poll every 2 s from every open console only reads.
    assert not [
        q["sql"] for q in queries.captured_queries if not q["sql"].lstrip().upper().startswith("SELECT")
    ]
    assert ControlHandover.objects.get(pk=stale.pk).state == ControlHandover.State.ASKED
