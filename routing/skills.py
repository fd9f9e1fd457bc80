"""The seat types of the joint command centre (DOMAIN.md), used as routing skills."""

from __future__ import annotations

from enum import StrEnum


class Skill(StrEnum):
    INTAKE_GUIDANCE = "intake_guidance"
    ONLINE_REVIEW = "online_review"
    ONLINE_DETERMINATION = "online_determination"
    ACCIDENT_QUERY = "accident_query"
    VIDEO_PATROL = "video_patrol"
    INSURANCE_CLAIM = "insurance_claim"
    RESCUE = "rescue"
    POLICE_DISPATCH = "police_dispatch"


SKILLS: tuple[str, ...] = tuple(s.value for s in Skill)

#: Seats that are always a human fallback: any doubt in the IVR ends at one of these.
HUMAN_FALLBACK_SKILLS: frozenset[str] = frozenset({Skill.INTAKE_GUIDANCE.value, Skill.POLICE_DISPATCH.value})

SKILL_LABELS_ZH: dict[str, str] = {
    "intake_guidance": "接警引导",
    "online_review": "在线审核",
    "online_determination": "在线认定",
    "accident_query": "事故查询",
    "video_patrol": "视频巡查",
    "insurance_claim": "保险理赔",
    "rescue": "事故救援",
    "police_dispatch": "122接警调度",
}


def is_skill(name: str) -> bool:
    return name in SKILLS
