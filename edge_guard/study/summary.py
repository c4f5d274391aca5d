"""Plain-text rendering of `analyze()`'s dict (what `edge-guard study analyze` prints).

The text is terminal-safe: every data value goes through `edge_guard.sanitize` (texts and
names on one line, escape sequences shown, never obeyed)."""

from __future__ import annotations

from typing import Any

from edge_guard.sanitize import term, term_line
from edge_guard.study.plots import likert_chart_text


def pct(x: float | None) -> str:
    return "—" if x is None else f"{x:.1%}"


def num(x: float | None, fmt: str = ".3f") -> str:
    return "—" if x is None else format(x, fmt)


def pval(p: float | None) -> str:
    if p is None:
        return "—"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def plural(k: int, noun: str) -> str:
    return f"{k} {noun}{'' if k == 1 else 's'}"


def _short(text: str, n: int = 90) -> str:
    text = term_line(" ".join(str(text).split()))
    return text if len(text) <= n else text[: n - 1] + "…"


def format_analysis(a: dict[str, Any], *, show_unparsed: int = 20) -> str:
    s = a["study"]
    lo, hi = s["scale"]
    labels = s["models"]
    mid = s["middle"]
    out = [
        f"Study {term_line(s['name'])}  ({term_line(s['source'])})",
        f"  {s['n_items']} items × {plural(len(labels), 'model')} × {plural(s['repeats'], 'repeat')}"
        + (f", policy {s['policy']}" if s.get("policy") else "")
        + (f", effort {s['effort']}" if s.get("effort") else "")
        + (f", temperature {s['temperature']:g}" if s.get("temperature") is not None else ""),
    ]
    if s.get("n_missing"):
        out.append(
            f"  INCOMPLETE: {s['n_missing']} of {s['n_planned']} ratings not run yet "
            "(rerun `edge-guard study run` with the same settings to resume)"
        )
    w = max(len("model"), *(len(m) for m in labels))
    scale = [str(k) for k in range(lo, hi + 1)]
    out += [
        "",
        f"Ratings ({lo}-{hi})"
        + (" — modal rating per item over repeats" if s["repeats"] > 1 else ""),
    ]
    head = f"  {'model'.ljust(w)}  {'n':>4} " + " ".join(f"{k:>4}" for k in scale)
    head += f"  {'mean':>5} {'sd':>5}  {f'share {mid}' if mid is not None else '':>8}  unparsed"
    out.append(head)
    for lab in labels:
        m = a["models"][lab]
        row = f"  {lab.ljust(w)}  {m['n']:>4} " + " ".join(f"{m['counts'][k]:>4}" for k in scale)
        row += f"  {num(m['mean'], '.2f'):>5} {num(m['sd'], '.2f'):>5}  {pct(m['middle_share']):>8}"
        row += f"  {m['n_unparsed']}"
        out.append(row)
        if m.get("mean_expected") is not None:
            out.append(
                f"  {''.ljust(w)}  mean expected rating (label scores) "
                f"{m['mean_expected']:.2f} over {m['n_expected']} items"
            )
    out += ["", likert_chart_text({lab: a["models"][lab]["counts"] for lab in labels})]
    for p in a["pairs"]:
        out += ["", *_pair_lines(p, mid)]
    for lab in labels:
        bad = a["unparsed"][lab]
        if not bad:
            continue
        out += ["", f"Unparsed ratings of {lab}: {len(bad)} (excluded from the statistics)"]
        for u in bad[:show_unparsed]:
            rep = f" r{u['repeat']}" if s["repeats"] > 1 else ""
            out.append(
                f"  [{term_line(u['id'])}{rep}] {_short(u['text'], 60)} — {term_line(u['reason'])}"
            )
        if len(bad) > show_unparsed:
            out.append(f"  … and {len(bad) - show_unparsed} more (see --json)")
    if a["divergent"]:
        out += ["", "Most divergent items"]
        for d in a["divergent"]:
            rs = "  ".join(
                f"{lab} {d['ratings'][lab] if d['ratings'][lab] is not None else '—'}"
                for lab in labels
            )
            out.append(f"  [{term_line(d['id'])}] {rs}  | {_short(d['text'])}")
    if "stability" in a:
        out += [
            "",
            f"Stability over {s['repeats']} repeats (per item: share of the modal rating, sd)",
        ]
        for lab in labels:
            st = a["stability"][lab]
            out.append(
                f"  {lab.ljust(w)}  mean modal share {pct(st['mean_modal_share'])}, "
                f"fully stable {pct(st['fully_stable_share'])}, mean sd {num(st['mean_sd'], '.2f')}"
            )
            for d in st["least_stable"][:5]:
                rs = ",".join("—" if r is None else str(r) for r in d["ratings"])
                out.append(f"    [{d['id']}] {rs}  {_short(d['text'], 60)}")
    if a["topics"] and len(labels) > 0:
        out += ["", "By topic (mean rating" + (f" / share {mid}" if mid is not None else "") + ")"]
        tw = max(len(t) for t in a["topics"])
        for t, td in a["topics"].items():
            cells = "   ".join(
                f"{lab}: {num(td['models'][lab]['mean'], '.2f')} / {pct(td['models'][lab]['middle_share'])}"
                for lab in labels
            )
            out.append(f"  {t.ljust(tw)} ({td['n_items']:>3})  {cells}")
    return term("\n".join(out))


def _pair_lines(p: dict[str, Any], mid: int | None) -> list[str]:
    a, b = p["a"], p["b"]
    sp, icc, r = p["spearman"], p["icc"], p["ratings"]
    lines = [
        f"{a} vs {b}: {p['n_paired']} items rated by both"
        + (f" ({p['n_excluded']} excluded: unparsed by one or both)" if p["n_excluded"] else ""),
        f"  exact agreement      {pct(p['exact_agreement'])}  (differ on {pct(p['differ_share'])})",
        f"  within ±1            {pct(p['within_one'])}",
        f"  kappa (quadratic)    {num(p['kappa_quadratic'])}",
        f"  Spearman rho         {num(sp['rho'])}  (p {pval(sp['p'])})",
        f"  ICC(2,1) absolute    {num(icc['icc2_1'])}   ICC(3,1) consistency {num(icc['icc3_1'])}",
    ]
    if mid is not None and "middle" in p:
        m = p["middle"]
        mc, z = m["mcnemar"], m["two_proportion_z"]
        lines += [
            f"  share of {mid}s          {a} {pct(m['share_a'])} vs {b} {pct(m['share_b'])} (paired items)",
            f"    McNemar exact (paired): {mc['only_first']} items {mid} only for {a}, "
            f"{mc['only_second']} only for {b}, p {pval(mc['p'])}",
            f"    two-proportion z (unpaired, as the seed): z {num(z['z'], '.2f')}, p {pval(z['p'])}",
        ]
    w, st = r["wilcoxon"], r["sign_test"]
    lines += [
        f"  mean rating          {a} {num(r['mean_a'], '.2f')} vs {b} {num(r['mean_b'], '.2f')} "
        f"(mean diff {num(r['mean_diff'], '+.2f')})",
        f"    Wilcoxon signed-rank: W {num(w['statistic'], '.1f')}, p {pval(w['p'])} "
        f"({w['n_nonzero']} non-zero differences)",
        f"    sign test: {a} higher on {st['first_higher']}, {b} higher on {st['second_higher']}, "
        f"p {pval(st['p'])}",
    ]
    if "expected" in p:
        e = p["expected"]
        lines.append(
            f"  expected ratings     Pearson r {num(e['pearson'])}, mean diff "
            f"{num(e['mean_diff'], '+.2f')} over {e['n']} items"
        )
    return lines
