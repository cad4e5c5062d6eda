"""Stand-ins for the model calls of the job-application example (ported from flowcraft's
declarative examples): plain functions that look at the text instead of asking a model."""

from __future__ import annotations

from typing import Any

from flowrun import Result

KNOWN_SKILLS = ("TypeScript", "Node.js", "SQL", "Python", "React", "Go")


def extract_skills(resume: str) -> list[str]:
    """The known technical skills the resume names."""
    return [skill for skill in KNOWN_SKILLS if skill.lower() in resume.lower()]


def analyze_tone(cover_letter: str) -> str:
    """'professional', 'casual' or 'unprofessional', from a few telltale words."""
    text = cover_letter.lower()
    if any(word in text for word in ("whatever", "dunno", "lol")):
        return "unprofessional"
    return "casual" if text.startswith(("hey", "hi ")) else "professional"


def check_qualifications(skills: list[str], tone: str, required: list[str]) -> Result:
    """Take the `true` edge when every required skill is there and the tone is professional."""
    ok = all(skill in skills for skill in required) and tone == "professional"
    return Result({"qualified": ok, "missing": [s for s in required if s not in skills]},
                  action="true" if ok else "false")  # fmt: skip


def interview_email(applicant: str) -> str:
    return (
        f"Dear {applicant},\n\nWe were impressed with your resume and would like to invite "
        "you to an interview.\n\nKind regards,\nThe hiring team"
    )


def rejection_email(applicant: str) -> str:
    return (
        f"Dear {applicant},\n\nThank you for applying. We have decided to move forward with "
        "other candidates.\n\nKind regards,\nThe hiring team"
    )


def final_output(emails: dict[str, Any]) -> str:
    """The one email that was sent (the branch not taken was skipped and gave nothing)."""
    ((branch, body),) = emails.items()
    return f"Final email ({branch}):\n\n{body}"
