"""Service jobs in headless Chromium against a real ``moi server``: each state shown live, steps as rows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from examples.hetatm_service import SAMPLE, Hetatm
from moi import services
from moi.jobs import connections
from moi.services import sweeper
from tests import service_defs
from tests.browser import Server, log_in, row
from tests.conftest import finished

EXAMPLE_YAML = Path(__file__).resolve().parent.parent / "examples" / "services.yaml"
RECORD_STATUSES = """() => {
    window.seen = {};
    new MutationObserver(() => document.querySelectorAll('.moi-row').forEach(r => {
        const s = r.querySelector('.moi-status').textContent, seen = (window.seen[r.dataset.id] ||= []);
        if (seen[seen.length - 1] !== s) seen.push(s);
    })).observe(document.getElementById('moi-jobs'), {subtree: true, childList: true, characterData: true});
}"""


def test_a_service_job_shows_each_state_live_and_a_yaml_chain_shows_its_steps(page: Any, server: Server) -> None:
    from playwright.sync_api import expect

    services.register(Hetatm)
    services.register(service_defs.Recording)
    try:
        log_in(page, server, "biologist")
        page.evaluate(RECORD_STATUSES)
        job_id = services.submit("hetatm", "biologist", {}, files={"a.pdb": SAMPLE.encode()})[0]
        expect(row(page, job_id).locator(".moi-status")).to_have_text("Success")
        finished(job_id)
        assert sweeper.sweep(connections.store(), moment=time.time() + 31 * 86400) == [job_id]
        expect(row(page, job_id).locator(".moi-status")).to_have_text("Archived")
        lifecycle = ["Queued", "Preprocessing", "Running", "Postprocessing", "Success", "Archived"]
        seen = page.evaluate("window.seen")[job_id]
        # The relay sends each node's latest state: a state shorter than a read may be passed over.
        assert seen[-2:] == ["Success", "Archived"] and seen == sorted(seen, key=lifecycle.index), seen

        slow = services.submit("recording", "biologist", {"pause": 0.5})[0]  # each hook lasts 0.5 s
        expect(row(page, slow).locator(".moi-status")).to_have_text("Success")
        seen = page.evaluate("window.seen")[slow]
        assert seen in (lifecycle[:5], lifecycle[1:5]), seen  # Queued only if shown before an engine took it

        services.load_into(connections.store(), EXAMPLE_YAML.read_text(), "services.yaml")
        chain = services.submit("textstats", "biologist", {}, files={"text.txt": b"one two three two\n"})[0]
        expect(row(page, chain).locator(".moi-status")).to_have_text("Success")
        steps = {info["name"]: info["id"] for info in connections.store().descendant_jobs(chain)}
        assert sorted(steps) == ["distinct", "longest", "report", "split"]
        for step_id in steps.values():
            expect(row(page, step_id).locator(".moi-status")).to_have_text("Success")
        expect(row(page, steps["report"]).locator(".moi-name")).to_have_text("report")
    finally:
        services.unregister("hetatm")
        services.unregister("recording")
