from headroom.engine.scheduler import DueQueue


def test_earliest_first_and_rescheduling_supersedes():
    q = DueQueue()
    q.schedule("a", 5.0)
    q.schedule("b", 1.0)
    q.schedule("a", 0.5)
    assert q.next_due() == 0.5
    assert q.pop_due(2.0) == [("a", 0.5), ("b", 1.0)]
    assert q.next_due() is None and len(q) == 0


def test_schedule_earlier_only_moves_forward_in_time():
    q = DueQueue()
    q.schedule("a", 1.0)
    q.schedule_earlier("a", 2.0)
    assert q.due_of("a") == 1.0
    q.schedule_earlier("a", 0.1)
    assert q.due_of("a") == 0.1
    assert q.pop_due(0.1) == [("a", 0.1)]


def test_cancel():
    q = DueQueue()
    q.schedule("a", 1.0)
    q.cancel("a")
    assert q.pop_due(10) == [] and q.next_due() is None
