"""The API's /docs page in a headless browser with no network: a screenshot that shows the operations.

    apt-get install -y chromium          # Debian's; the test suite checks the page without a browser
    .venv/bin/python benchmarks/docs_offline.py --out /tmp/docs.png

Serves the app's FastAPI object (serving.deployments.api, with `offline_docs`) on 127.0.0.1 with uvicorn, points
chromium at /docs with background networking off, and checks that the page's DOM lists the API's operations.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import threading
import time

import uvicorn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="docs.png")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        raise SystemExit("chromium is not installed: apt-get install -y chromium")
    from skillrouter.serving.deployments import api
    from skillrouter.serving.docs import STATIC, offline_docs

    if not any(getattr(r, "path", None) == STATIC for r in api.routes):
        offline_docs(api)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
             "--disable-component-update", "--no-first-run", "--virtual-time-budget=5000"]
    url = f"http://127.0.0.1:{port}/docs"
    subprocess.run([browser, *flags, f"--screenshot={args.out}", "--window-size=1280,1600", url], check=True,
                   capture_output=True, timeout=120)
    dom = subprocess.run([browser, *flags, "--dump-dom", url], check=True, capture_output=True, text=True,
                         timeout=120).stdout
    operations = dom.count('class="opblock-summary-path"') + dom.count("opblock-summary-path ")
    server.should_exit = True
    print(f"{url}: {operations} operations rendered; screenshot {args.out}")
    if operations == 0:
        raise SystemExit("the page rendered no operation: Swagger UI did not load")


if __name__ == "__main__":
    main()
