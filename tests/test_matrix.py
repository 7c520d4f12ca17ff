"""The README's client x case table is what the clients do today: regenerated here and compared."""

from __future__ import annotations

import re
from pathlib import Path

from replay.cassettes.corpus import conformance_corpus
from replay.clients.base import dialects_of
from replay.clients.registry import get_client
from replay.conformance.cuts import build_cases, select
from replay.conformance.matrix import END, MATRIX_CASES, MATRIX_CLIENTS, MATRIX_OPTIONS, START, render
from replay.conformance.runner import CassetteCache, run_cases

ROOT = Path(__file__).resolve().parents[1]
# At the first audio delta a client's played ms is 0 or 1 depending on microseconds, so a correct
# client deletes or truncates there, run to run (the README says so under the table).
EITHER = {"RT-INT-5": {"delete", "truncate"}}


def table(markdown: str) -> dict[tuple[str, str], str]:
    """{(case id, client without version): cell} of a rendered table."""
    lines = [line for line in markdown.splitlines() if line.startswith("| ")]
    header = [re.sub(r" [\w.+-]*\d[\w.+-]*$", "", c.strip()) for c in lines[0].strip("|").split("|")]
    cells: dict[tuple[str, str], str] = {}
    for line in lines[1:]:
        row = [c.strip() for c in line.strip("|").split("|")]
        case_id = row[0].split()[0]
        for column, cell in zip(header[2:], row[2:], strict=True):
            cells[(case_id, column)] = cell
    return cells


def same(case_id: str, readme: str, fresh: str) -> bool:
    if readme == fresh:
        return True
    words = EITHER.get(case_id)
    if not words:
        return False
    pattern = "|".join(sorted(words))
    return re.sub(pattern, "*", readme) == re.sub(pattern, "*", fresh)


async def test_the_readme_matrix_is_what_the_clients_do() -> None:
    corpus = conformance_corpus()
    cases = select(build_cases(corpus), MATRIX_CASES)
    cassettes = CassetteCache(corpus)
    reports = []
    for name in MATRIX_CLIENTS:
        client = get_client(name)
        own = [c for c in cases if c.dialect in dialects_of(client)]
        reports.append(await run_cases(own, client, MATRIX_OPTIONS, cassettes=cassettes))
    fresh = table(render(reports))
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    readme = table(text[text.index(START):text.index(END)])
    assert set(readme) == set(fresh), "the README's table has other rows or clients: rtreplay matrix --update README.md"
    differ = {key: (readme[key], fresh[key]) for key in readme if not same(key[0], readme[key], fresh[key])}
    assert differ == {}, "README matrix is stale (rtreplay matrix --update README.md): " + repr(differ)
