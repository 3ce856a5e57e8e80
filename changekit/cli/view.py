"""``changekit view OUT``: review a scene's changes on a map in the browser (:mod:`changekit.viewer`)."""

from __future__ import annotations

from changekit.cli._parser import Parser


def main(argv: list[str]) -> int:
    p = Parser(prog="changekit view",
               description="Serve a `changekit scene` output folder as a map: both dates, the change "
                           "probability and map, the polygons (a list by area, popups).")
    p.add_argument("out", help="the --out folder of a finished `changekit scene` run")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--no-browser", action="store_true", help="do not open a browser")
    args = p.parse_args(argv)
    import threading
    import webbrowser

    import uvicorn

    from changekit.viewer import create_app

    app = create_app(args.out)  # refuses a folder that is not a finished scene run, before any server starts
    url = f"http://{args.host}:{args.port}/"
    print(f"changekit view: {args.out} at {url} (Ctrl-C stops)")
    if not args.no_browser:
        threading.Timer(1.0, webbrowser.open, args=(url,)).start()
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
