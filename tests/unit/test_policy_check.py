"""`policy check`: every failure it must catch, each with its file, path and message."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from privacy_service.calendars import holidays_version
from privacy_service.policy.loader import PolicyError, check_policy, load_policy
from tests.policy_files import POLICIES, ROOT, copy_policies, edit_yaml

Change = Callable[[dict[str, Any]], object]


def problems_after(tmp_path: Path, file: str, change: Change) -> list[str]:
    folder = copy_policies(tmp_path)
    edit_yaml(folder / file, change)
    document, problems = check_policy(folder)
    assert document is None
    assert problems
    prefix = str(folder) + os.sep
    return [str(problem).removeprefix(prefix) for problem in problems]


def test_the_shipped_policy_is_valid() -> None:
    document, problems = check_policy(POLICIES)
    assert problems == []
    assert document is not None
    assert document.languages == ("en", "zh")
    # Every category the service stores has exactly one typed rule.
    assert set(document.retention_rules()) == set(document.data_categories)
    assert set(document.profile_fields.values()) <= set(document.retention_rules())


# Every policy version that has shipped, with the content hash it shipped with. A published version
# never changes (`policy publish` refuses a known version with other content, and a retention run
# would record a (version, hash) pair no published version has), so an edit of policies/ must bump
# `version` in policy.yaml and add its hash here: this test fails first, not a deployment.
SHIPPED_VERSIONS = {
    "2026.1": "b4aff3f434f8048e1696eb501e50e55adac10a892e33b5240e07de4b9f19a698",
    "2026.2": "8225bfc523094bc8e3d5f0ac8d4516526cdbeda3199af41fb10f33486a376c11",
    "2026.3": "4f15d7ae88231bb80286d0fdc9297eac35e674abffd55dceed692cfab65a39f9",
}


def test_an_edited_policy_gets_a_new_version() -> None:
    shipped = load_policy(POLICIES)
    assert shipped.version in SHIPPED_VERSIONS, (
        f"new policy version {shipped.version}: add it here with its hash {shipped.content_hash}"
    )
    assert SHIPPED_VERSIONS[shipped.version] == shipped.content_hash, (
        f"policies/ changed but version {shipped.version} did not: bump `version` (and `effective_date`) "
        f"in policy.yaml and add the new version here with hash {shipped.content_hash}"
    )


def test_a_category_without_a_retention_rule(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "policy.yaml", lambda d: d["data_categories"]["user.behavior"].pop("retention"))
    assert problems == [
        "policy.yaml: data_categories.user.behavior.retention: the service stores this category "
        "but it has no retention rule (period, trigger, action)"
    ]


def test_a_profile_field_category_that_has_no_rule(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["profile_fields"]["nickname"] = "user.nickname"
        data["profile_fields"]["alias"] = "user.alias"
        data["data_categories"]["user.alias"] = {
            "source": "data_subject",
            "purposes": ["service_provision"],
            "provision": "optional",
        }

    problems = problems_after(tmp_path, "policy.yaml", change)
    assert "policy.yaml: profile_fields.nickname: category 'user.nickname' is not in data_categories" in problems
    assert (
        "policy.yaml: data_categories.user.alias.retention: the service stores this category "
        "but it has no retention rule (period, trigger, action)"
    ) in problems


def test_a_required_item_missing_in_one_language(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "notice.zh.yaml", lambda d: d["sections"].pop("automated_decisions"))
    assert problems == [
        "notice.zh.yaml: sections.automated_decisions: required item missing in this language "
        "(GDPR Art. 13(2)(f); PIPL Art. 24)"
    ]


def test_a_required_item_missing_in_the_default_language(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "notice.en.yaml", lambda d: d["sections"].pop("dpo"))
    assert problems == ["notice.en.yaml: sections.dpo: required item missing in this language (GDPR Art. 13(1)(b))"]


def test_a_missing_label_is_reported_with_its_path(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "notice.zh.yaml", lambda d: d["labels"]["units"].pop("years"))
    assert problems == ["notice.zh.yaml: labels.units.years: Field required"]


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (
            lambda d: d["data_categories"]["user.name"]["retention"].update(period="5 years"),
            "data_categories.user.name.retention.period",
        ),
        (
            lambda d: d["data_categories"]["user.financial.transaction"]["retention"]["legal_duty"].update(period="P5"),
            "data_categories.user.financial.transaction.retention.legal_duty.period",
        ),
        (lambda d: d["regimes"]["ccpa"]["deadline"].update(period="45 days"), "regimes.ccpa.deadline.period"),
    ],
)
def test_a_period_that_does_not_parse(tmp_path: Path, change: Change, path: str) -> None:
    problems = problems_after(tmp_path, "policy.yaml", change)
    assert problems == [f"policy.yaml: {path}: not an ISO 8601 duration such as P5Y, P13M, P30D or PT72H"]


@pytest.mark.parametrize("basis", [None, "", "   "])
def test_a_legal_duty_without_a_basis(tmp_path: Path, basis: str | None) -> None:
    def change(data: dict[str, Any]) -> None:
        duty = data["data_categories"]["user.financial.transaction"]["retention"]["legal_duty"]
        if basis is None:
            duty.pop("basis")
        else:
            duty["basis"] = basis

    problems = problems_after(tmp_path, "policy.yaml", change)
    assert problems == [
        "policy.yaml: data_categories.user.financial.transaction.retention.legal_duty.basis: a legal duty that "
        "overrides erasure must name its basis (the law that requires keeping the data)"
    ]


def test_a_notice_naming_an_id_the_policy_lacks(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "notice.zh.yaml", lambda d: d["regimes"].update(lgpd={"name": "LGPD"}))
    assert problems == ["notice.zh.yaml: regimes.lgpd: not in policy.yaml: the zh notice and the policy disagree"]


def test_a_notice_missing_an_id_the_policy_has(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "notice.zh.yaml", lambda d: d["data_categories"].pop("user.device"))
    assert problems == [
        "notice.zh.yaml: data_categories.user.device: policy.yaml defines this but the zh notice does not describe it"
    ]


def test_a_policy_id_no_notice_describes(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    edit_yaml(
        folder / "policy.yaml",
        lambda d: d["authorities"].update(cnil={"name": "CNIL", "url": "https://www.cnil.fr", "country": "FR"}),
    )
    _, problems = check_policy(folder)
    texts = [str(problem).removeprefix(str(folder) + os.sep) for problem in problems]
    assert texts == [
        "notice.en.yaml: authorities.cnil: policy.yaml defines this but the en notice does not describe it",
        "notice.zh.yaml: authorities.cnil: policy.yaml defines this but the zh notice does not describe it",
    ]


def test_languages_disagreeing_on_a_number(tmp_path: Path) -> None:
    problems = problems_after(
        tmp_path,
        "notice.zh.yaml",
        lambda d: d["regimes"]["gdpr"].update(description=d["regimes"]["gdpr"]["description"].replace("679", "680")),
    )
    assert problems == [
        "notice.zh.yaml: regimes.gdpr.description: the languages disagree on a fact: numbers only here: 2016/680; "
        "only in notice.en.yaml: 2016/679"
    ]


def test_prose_naming_a_contact_the_policy_does_not_list(tmp_path: Path) -> None:
    def change(data: dict[str, Any]) -> None:
        data["sections"]["dpo"]["body"] += "请发送邮件至 old-dpo@wallet.example。"

    problems = problems_after(tmp_path, "notice.zh.yaml", change)
    assert problems == [
        "notice.zh.yaml: sections.dpo.body: names the e-mail address old-dpo@wallet.example which policy.yaml "
        "does not list as a contact"
    ]


def test_a_notice_whose_language_field_disagrees_with_its_name(tmp_path: Path) -> None:
    problems = problems_after(tmp_path, "notice.zh.yaml", lambda d: d.update(language="ja"))
    assert problems == ["notice.zh.yaml: language: says 'ja' but the file name says 'zh'"]


def test_a_language_without_a_notice_file(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    (folder / "notice.zh.yaml").unlink()
    _, problems = check_policy(folder)
    assert [str(p).removeprefix(str(folder) + os.sep) for p in problems] == [
        "policy.yaml: languages[1]: no notice file notice.zh.yaml"
    ]


def test_broken_yaml_names_the_line(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    (folder / "notice.en.yaml").write_text("language: en\nlabels: [unclosed\n", encoding="utf-8")
    _, problems = check_policy(folder)
    assert [str(p).removeprefix(str(folder) + os.sep) for p in problems] == [
        "notice.en.yaml: line 3: not valid YAML (ParserError)"
    ]


def test_all_problems_are_reported_at_once_and_loading_refuses(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)

    def change(data: dict[str, Any]) -> None:
        data["data_categories"]["user.device"].pop("retention")
        data["data_categories"]["user.name"]["retention"]["period"] = "six months"

    edit_yaml(folder / "policy.yaml", change)
    edit_yaml(folder / "notice.zh.yaml", lambda d: d["sections"].pop("cookies"))
    _, problems = check_policy(folder)
    assert len(problems) == 3
    with pytest.raises(PolicyError) as caught:
        load_policy(folder)
    assert len(caught.value.problems) == 3
    assert "(and 2 more; run `privacy-service policy check`)" in str(caught.value)


# -- the command itself (as CI runs it) ------------------------------------------------------


def run_check(policy_dir: Path, cwd: Path, *options: str) -> subprocess.CompletedProcess[str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("PRIVACY_")}
    env.update(PRIVACY_POLICY_DIR=str(policy_dir), COLUMNS="200")
    return subprocess.run(  # noqa: S603 (the test's own literal options)
        [sys.executable, "-m", "privacy_service", "policy", "check", *options],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_passes_the_shipped_policy_with_a_one_line_summary(tmp_path: Path) -> None:
    # As of mid-2026 every calendar has data for the years a deadline can reach (see the next test).
    result = run_check(ROOT / "policies", tmp_path, "--as-of", "2026-06-01")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert re.fullmatch(r"policy \S+ is valid: \d+ data categories, \d+ retention rules, languages en, zh", lines[0])
    # Today: the same summary last, and nothing but calendar warnings before it.
    today = run_check(ROOT / "policies", tmp_path)
    assert today.returncode == 0, today.stderr
    *before, last = today.stderr.strip().splitlines()
    assert last == lines[0]
    assert all(line.startswith("warning: policy.yaml: regimes.") for line in before), before


def test_cli_warns_when_a_calendar_has_no_data_for_a_coming_year(tmp_path: Path) -> None:
    """China's make-up working days come with a package release after the State Council's notice."""
    result = run_check(ROOT / "policies", tmp_path, "--as-of", "2099-12-01")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[:2] == [
        f"warning: policy.yaml: regimes.pipl.calendars[0]: calendar CN has no data for {year} (holidays "
        f"{holidays_version()}): upgrade the holidays package or list that year's closed_days and working_days"
        for year in (2099, 2100)
    ]
    assert lines[2].startswith("policy ")
    assert len(lines) == 3
    bad = run_check(ROOT / "policies", tmp_path, "--as-of", "someday")
    assert bad.returncode != 0
    assert "--as-of takes a date" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_cli_fails_with_file_path_and_problem(tmp_path: Path) -> None:
    folder = copy_policies(tmp_path)
    edit_yaml(folder / "policy.yaml", lambda d: d["data_categories"]["user.behavior"].pop("retention"))
    edit_yaml(folder / "notice.zh.yaml", lambda d: d["sections"].pop("complaints"))
    result = run_check(folder, tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert f"{folder / 'policy.yaml'}: data_categories.user.behavior.retention: the service stores" in result.stderr
    assert f"{folder / 'notice.zh.yaml'}: sections.complaints: required item missing" in result.stderr
    assert "2 problem(s)" in result.stderr
