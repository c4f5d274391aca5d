"""The seed's ToxicChat experiment in one script: models × policies × n items → one report.

    python scripts/toxic_chat.py -n 200 --out toxic_chat.html
    python scripts/toxic_chat.py --models synth:tiny-o200k --dataset my.jsonl -n 20   # offline

Each (model, policy) pair is a named, resumable run (rerunning the script resumes and
reuses cached results). Without --dataset it uses the pulled ToxicChat test split
(`edge-guard datasets pull toxic-chat`; CC-BY-NC-4.0), pulling it first when online.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from edge_guard.api import build_backend, build_classifier
from edge_guard.backends.local import release_engine
from edge_guard.datasets.hub import DEFAULT_CONFIG, KNOWN, pull_dataset
from edge_guard.engine.sampling import DEFAULT_MAX_TOKENS
from edge_guard.errors import EdgeGuardError
from edge_guard.report import write_report
from edge_guard.runs.batch import RunProgress, run_dataset
from edge_guard.settings.resolve import resolve_settings
from edge_guard.store import Store

DEFAULT_MODELS = "gpt-oss-safeguard-20b:mxfp4,gpt-oss-20b:mxfp4"
DEFAULT_POLICIES = "toxic_simple,toxic_chat"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument(
        "--models", default=DEFAULT_MODELS, help=f"comma-separated (default {DEFAULT_MODELS})"
    )
    ap.add_argument(
        "--policies", default=DEFAULT_POLICIES, help=f"comma-separated (default {DEFAULT_POLICIES})"
    )
    ap.add_argument("-n", type=int, default=200, help="items per run (default 200)")
    ap.add_argument("--sample", choices=("natural", "balanced"), default="natural")
    ap.add_argument("--seed", type=int, default=0, help="sample seed")
    ap.add_argument(
        "--dataset", default=None, help="a local .jsonl/.csv/.parquet instead of ToxicChat"
    )
    ap.add_argument("--split", default="test")
    ap.add_argument("--effort", default="medium", choices=("low", "medium", "high"))
    ap.add_argument("--max-tokens", type=int, default=DEFAULT_MAX_TOKENS)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=16384)
    ap.add_argument("--db", default=None, help="result store (default: the data dir's)")
    ap.add_argument("--out", default="toxic_chat_report.html", help="report (.html or .md)")
    return ap.parse_args(argv)


def dataset_path(args: argparse.Namespace) -> str:
    if args.dataset:
        return args.dataset
    local = KNOWN["toxic-chat"].local_path(DEFAULT_CONFIG, args.split)
    if local.exists():
        return str(local)
    print(f"pulling ToxicChat ({KNOWN['toxic-chat'].license}) ...", file=sys.stderr)
    return str(pull_dataset("toxic-chat", DEFAULT_CONFIG, args.split)[0])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        data = dataset_path(args)
        settings = resolve_settings(
            {
                "effort": args.effort,
                "max_tokens": args.max_tokens,
                "ctx": args.ctx,
                "parallel": args.parallel,
                "db": args.db,
            }
        )
        store = Store(settings.db)
        names = []
        for model in [m.strip() for m in args.models.split(",") if m.strip()]:
            backend = build_backend(settings.replace(model=model))
            for policy in [p.strip() for p in args.policies.split(",") if p.strip()]:
                clf = build_classifier(policy, settings, backend=backend, store=store)

                def show(p: RunProgress, *_: object) -> None:
                    if p.done == p.total or p.done % 10 == 0:
                        print(
                            f"  {p.done}/{p.total} · {p.labels_per_s:.2f} labels/s · "
                            f"{p.tokens_per_s:.0f} tok/s",
                            file=sys.stderr,
                        )

                print(f"{model} × {policy}", file=sys.stderr)
                summary = run_dataset(
                    data, clf, limit=args.n, sample=args.sample, seed=args.seed, on_result=show
                )
                names.append(summary.name)
            release_engine()
        out = write_report(
            names,
            Path(args.out),
            store=store,
            benchmark="toxic-chat",
            title="ToxicChat: policies × models",
        )
    except EdgeGuardError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
