"""Static security scan of the Python package: bandit finds no medium or high severity issue in training/."""

import json
import subprocess
import sys

from tests.conftest import REPO


def test_bandit_reports_no_medium_or_high_findings():
    proc = subprocess.run([sys.executable, "-m", "bandit", "-r", str(REPO / "training"), "-f", "json",
                           "--severity-level", "medium", "-q"], capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stdout)
    findings = [f"{r['filename']}:{r['line_number']} {r['test_id']} {r['issue_text']}" for r in report["results"]]
    assert findings == [], "\n".join(findings)
    assert report["metrics"]["_totals"]["loc"] > 500  # it really scanned the package
