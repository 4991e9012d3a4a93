"""Small SVG charts rendered on the server (no script, no library): stacked bars over time and
horizontal bars of top-N counts. Labels are escaped; colours are presentation attributes (the
CSP forbids inline styles)."""

from __future__ import annotations

from proxy.console.html import esc

COLOURS = {"accept": "#3c9a5f", "tag": "#d9a400", "tempfail": "#e07b24", "reject": "#c43c3c"}


def stacked_bars(series: dict[str, list[int]], labels: list[str], width: int = 640, height: int = 180) -> str:
    """One bar per slot (``labels``), its parts stacked by series (``{name: counts}``)."""
    slots = len(labels)
    totals = [sum(v[i] for v in series.values()) for i in range(slots)]
    top = max([*totals, 1])
    left, bottom = 34, 18
    plot_w, plot_h = width - left - 4, height - bottom - 6
    bw = plot_w / max(slots, 1)
    axis = 'text-anchor="end" font-size="10" fill="#5b6672"'
    base = height - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img">',
        f'<text x="{left - 4}" y="12" {axis}>{top}</text>',
        f'<text x="{left - 4}" y="{base}" {axis}>0</text>',
        f'<line x1="{left}" y1="{base}" x2="{width - 4}" y2="{base}" stroke="#b8c1ca"/>',
    ]
    for i in range(slots):
        y = float(base)
        for name, values in series.items():
            v = values[i]
            if not v:
                continue
            h = plot_h * v / top
            y -= h
            parts.append(
                f'<rect x="{left + i * bw + 0.5:.1f}" y="{y:.1f}" width="{max(bw - 1, 1):.1f}" '
                f'height="{h:.1f}" fill="{COLOURS.get(name, "#6b7c93")}"><title>{esc(labels[i])} '
                f"{esc(name)}: {v}</title></rect>"
            )
    for i in range(0, slots, max(slots // 6, 1)):
        x = left + i * bw
        parts.append(
            f'<text x="{x:.1f}" y="{height - 4}" font-size="10" fill="#5b6672">{esc(labels[i])}</text>'
        )
    parts.append("</svg>")
    legend = " ".join(
        f'<span class="badge {esc(n)}">{esc(n)} {sum(v)}</span>' for n, v in series.items() if sum(v)
    )
    return "".join(parts) + f'<p class="legend">{legend}</p>'


def top_bars(items: list[tuple[str, int]], width: int = 640, colour: str = "#1f5fa8") -> str:
    """Horizontal bars, one per (label, count), largest first."""
    if not items:
        return '<p class="meta">nothing in the last hour</p>'
    row, label_w = 20, 230
    height = row * len(items) + 4
    top = max(c for _, c in items) or 1
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" role="img">']
    for i, (label, count) in enumerate(items):
        y = i * row + 2
        w = (width - label_w - 50) * count / top
        text = label if len(label) <= 34 else label[:33] + "…"
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" font-size="11" fill="#1d232a">'
            f"{esc(text)}</text>"
            f'<rect x="{label_w}" y="{y + 2}" width="{max(w, 1):.1f}" height="{row - 6}" fill="{colour}">'
            f"<title>{esc(label)}: {count}</title></rect>"
            f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="11" fill="#5b6672">{count}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
