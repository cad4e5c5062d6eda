"""The composition examples in blueprints/ (ported from flowcraft's declarative examples): each
runs for every branch outcome, and its re-join node really runs."""

from __future__ import annotations

from pathlib import Path

import pytest

import flowrun

EXAMPLES = Path(__file__).resolve().parents[1] / "blueprints"


def run(name: str, tmp_path: Path, concurrency: int = 4, **context: object) -> dict:
    sets = [f"{k}={v}" for k, v in context.items()]
    report = flowrun.run(
        EXAMPLES / name, state_dir=tmp_path / "state", concurrency=concurrency, sets=sets
    )
    return report.as_dict()


@pytest.mark.parametrize("concurrency", [1, 4])
def test_job_application_invites_a_qualified_applicant(tmp_path: Path, concurrency: int) -> None:
    doc = run("job-application.yaml", tmp_path, concurrency)
    assert doc["status"] == "completed"
    nodes = doc["nodes"]
    assert nodes["send_interview_email"]["status"] == "succeeded"
    assert nodes["send_rejection_email"]["status"] == "skipped"
    assert nodes["send_interview_email/output_email"]["status"] == "succeeded"
    assert nodes["final_output"]["status"] == "succeeded"  # the re-join ran
    assert doc["context"]["final_output"].startswith("Final email (send_interview_email)")
    assert "invite you to an interview" in doc["context"]["final_output"]


def test_job_application_rejects_an_unprofessional_letter(tmp_path: Path) -> None:
    doc = run("job-application.yaml", tmp_path, coverLetter="hey, whatever")
    assert doc["nodes"]["send_interview_email"]["status"] == "skipped"
    assert doc["nodes"]["final_output"]["status"] == "succeeded"
    assert "move forward with other candidates" in doc["context"]["final_output"]


@pytest.mark.parametrize(
    ("post", "action"),
    [
        ("'I will kill you'", "ban"),
        ("'mail me at a@b.c'", "redact"),
        ("'is this allowed?'", "review"),
        ("'nice day'", "approve"),
    ],
)
def test_moderation_routes_four_ways_and_rejoins(tmp_path: Path, post: str, action: str) -> None:
    doc = run("moderation.yaml", tmp_path, post=post)
    assert doc["status"] == "completed"
    assert doc["context"]["summarize"]["action"] == action
    ran = [
        n
        for n in ("ban", "redact", "review", "approve")
        if doc["nodes"][n]["status"] == "succeeded"
    ]
    assert ran == [action]  # the default edge is not taken when an action edge is


def test_customer_reviews_map_a_subflow_over_the_list(tmp_path: Path) -> None:
    doc = run("customer-reviews.yaml", tmp_path)
    assert doc["status"] == "completed"
    assert doc["context"]["replies"] == [
        "thanked ana",
        "apologised to bo and opened a ticket",
        "asked cy what we could do better",
    ]
    assert doc["nodes"]["replies[2]/reply"]["status"] == "succeeded"  # the re-join ran
    assert doc["nodes"]["replies[2]/thank"]["status"] == "skipped"


def test_polling_loops_until_done(tmp_path: Path) -> None:
    doc = run("polling.yaml", tmp_path)
    assert doc["status"] == "completed"
    assert doc["context"]["poll"] == {"looks": 3, "state": "done"}
    assert doc["nodes"]["poll"]["items"] == {"total": 3, "succeeded": 3, "failed": 0}
