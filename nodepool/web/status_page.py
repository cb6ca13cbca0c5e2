"""The launcher's status page: ``/`` on its web port.

Plain server-rendered HTML with a little inline CSS: no script, no build
step, nothing fetched from anywhere (the web server forbids it with a
Content-Security-Policy), readable on a phone (wide tables scroll on their
own).  The page reloads itself every :data:`REFRESH_SECONDS`.

Every value comes from a :class:`~nodepool.web.status_snapshot.StatusSnapshot`
and is escaped: label, image and provider names come from configuration
files and node records from ZooKeeper, which anyone who can write there
controls.

Rows carry stable ``id``/``class``/``data-*`` attributes (``tr.node
[data-node-id]``, ``tr.request[data-request-id][data-reason]``,
``tr.pool[data-provider][data-pool]``, ``tr.launch-error``...), so
tests and operators' scripts can find them without parsing text.
"""

from __future__ import annotations

import html
import math
import time
from typing import Any

from nodepool.web.status_snapshot import (
    NODE_ROWS,
    REASON_ORDER,
    REQUEST_ROWS,
    LauncherView,
    ProviderStatus,
    ResourceUse,
    StatusSnapshot,
    take_snapshot,
)
from nodepool.zk import models

REFRESH_SECONDS = 10

CONTENT_TYPE = "text/html; charset=UTF-8"
# Sent with the page: it may load nothing (no script, image, font or
# frame) and may only style itself.
HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; style-src 'unsafe-inline'; "
                                "base-uri 'none'; form-action 'none'; "
                                "frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

_CSS = """
:root{color-scheme:light dark;--fg:#1d1f21;--bg:#fff;--mute:#666;--line:#ddd;
--head:#f3f4f6;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--info:#0969da}
@media (prefers-color-scheme:dark){:root{--fg:#e6e6e6;--bg:#16181b;--mute:#9aa0a6;
--line:#333;--head:#22252a;--ok:#3fb950;--warn:#d29922;--bad:#f85149;--info:#58a6ff}}
*{box-sizing:border-box}
body{margin:0;padding:0 .75rem 2rem;font:14px/1.4 system-ui,-apple-system,
"Segoe UI",Roboto,sans-serif;color:var(--fg);background:var(--bg)}
header{padding:.75rem 0 .25rem;border-bottom:1px solid var(--line)}
h1{font-size:1.25rem;margin:0}h2{font-size:1.1rem;margin:1.5rem 0 .5rem}
h3{font-size:1rem;margin:1rem 0 .4rem}
.meta,.note{color:var(--mute);font-size:.85rem;margin:.25rem 0}
nav{display:flex;flex-wrap:wrap;gap:.25rem .9rem;margin:.4rem 0}
nav a,a{color:var(--info)}
.cards{display:flex;flex-wrap:wrap;gap:.5rem;margin-top:.75rem}
.card{border:1px solid var(--line);border-radius:6px;padding:.4rem .7rem;flex:1 1 7.5rem;
max-width:12rem}
.card b{display:block;font-size:1.3rem}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%}
table{border-collapse:collapse;font-size:.85rem;white-space:nowrap}
th,td{border-bottom:1px solid var(--line);padding:.25rem .5rem;text-align:left;
vertical-align:top}
th{background:var(--head);position:sticky;top:0}
td.num{text-align:right;font-variant-numeric:tabular-nums}
td.zero{color:var(--mute)}
td.wrap{white-space:normal;min-width:14rem;max-width:40rem;word-break:break-word}
code{font-size:.85em}
.badge{display:inline-block;border-radius:4px;padding:0 .35rem;font-size:.8rem;
border:1px solid currentColor}
.ok,.st-ready,.st-fulfilled,.st-serving{color:var(--ok)}
.warn,.st-building,.st-init,.st-pending,.st-requested,.st-uploading,.st-starting{
color:var(--warn)}
.bad,.st-failed,.st-aborted,.st-stopped,.st-unknown{color:var(--bad)}
.st-in-use,.st-used,.st-hold,.st-testing,.va-checking{color:var(--info)}
.va-passed{color:var(--ok)}.va-pending{color:var(--warn)}.va-failed{color:var(--bad)}
ul.quota{list-style:none;margin:0;padding:0}
ul.quota li{display:flex;align-items:center;gap:.4rem}
meter{width:5rem}
footer{margin-top:1.5rem;border-top:1px solid var(--line)}
"""


class StatusPage:
    """Renders the page for one launcher (see
    :class:`~nodepool.web.status_snapshot.LauncherView` for what it
    reads).  Thread-safe: each call gathers its own snapshot."""

    def __init__(self, launcher: LauncherView) -> None:
        self.launcher = launcher

    def snapshot(self) -> StatusSnapshot:
        return take_snapshot(self.launcher)

    def render(self) -> str:
        return render_page(self.snapshot())


# Values --------------------------------------------------------------------


def esc(value: Any) -> str:
    """HTML-escaped text of ``value`` (quotes too: safe in attributes)."""
    return html.escape("" if value is None else str(value), quote=True)


def human_age(seconds: float) -> str:
    """A short duration: ``42s``, ``3m 07s``, ``2h 05m``, ``4d 03h``."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, sec = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours:02d}h"


def _utc(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def _age_cell(timestamp: float, now: float) -> str:
    """A cell with the age, its seconds and the absolute time (hover)."""
    if not timestamp:
        return '<td class="age">?</td>'
    seconds = max(0, int(now - timestamp))
    return (f'<td class="age num" data-age-seconds="{seconds}" '
            f'title="{_utc(timestamp)}">{human_age(seconds)}</td>')


def _amount(value: float | None) -> str:
    if value is None:
        return "no limit"
    if value == math.inf:
        return "\u221e"
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def _state(state: str) -> str:
    return f'<span class="st-{esc(state)}">{esc(state)}</span>'


def _table(head: list[str], rows: list[str], table_id: str) -> str:
    """A table (inside a horizontally scrolling box) from escaped header
    texts and pre-rendered ``<tr>`` rows."""
    heads = "".join(f"<th>{h}</th>" for h in head)
    body = "".join(rows) if rows else (
        f'<tr class="empty"><td colspan="{len(head) or 1}">none</td></tr>')
    return (f'<div class="scroll"><table id="{table_id}"><thead><tr>{heads}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


# Sections --------------------------------------------------------------------


def render_page(snap: StatusSnapshot) -> str:
    """The whole page for ``snap``."""
    parts = [
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">',
        f"<title>Nodepool launcher {esc(snap.hostname)}</title>",
        f"<style>{_CSS}</style></head><body>",
        _header(snap),
        "<main>",
        _summary(snap),
        _providers(snap),
        _nodes(snap),
        _requests(snap),
        _images(snap),
        _errors(snap),
        "</main>",
        _footer(),
        "</body></html>\n",
    ]
    return "".join(parts)


def _header(snap: StatusSnapshot) -> str:
    zk = ('<span class="badge ok" id="zk-state">ZooKeeper connected</span>'
          if snap.connected else
          '<span class="badge bad" id="zk-state">ZooKeeper disconnected: figures may '
          'be stale</span>')
    ready = ('<span class="badge ok" id="ready-state">ready</span>' if snap.ready else
             '<span class="badge warn" id="ready-state">starting</span>')
    return (
        f'<header><h1>Nodepool launcher <span id="hostname">{esc(snap.hostname)}</span>'
        f"</h1><p class=\"meta\">{zk} {ready} As of "
        f'<time id="taken-at" datetime="{_utc(snap.taken_at)}">{_utc(snap.taken_at)}'
        f"</time> from this launcher's memory; reloads every {REFRESH_SECONDS} s.</p>"
        '<nav><a href="#providers">Providers</a><a href="#nodes">Nodes</a>'
        '<a href="#requests">Requests</a><a href="#images">Images</a>'
        '<a href="#errors">Launch errors</a></nav></header>')


def _summary(snap: StatusSnapshot) -> str:
    states = snap.node_states
    waiting = sum(n for code, n in snap.request_reasons.items()
                  if code not in ("served", "fulfilled", "failed"))
    errors = sum(len(p.errors) for p in snap.providers)
    cards = [
        ("nodes", "Nodes", snap.node_total),
        ("nodes-ready", "Ready", states.get(models.READY, 0)),
        ("nodes-in-use", "In use", states.get(models.IN_USE, 0)),
        ("nodes-building", "Building",
         states.get(models.BUILDING, 0) + states.get(models.INIT, 0)),
        ("requests-waiting", "Requests waiting", waiting),
        ("requests-served", "Requests being served", snap.request_reasons.get("served", 0)),
        ("launch-errors", "Recent launch errors", errors),
    ]
    body = "".join(f'<div class="card" id="card-{key}">{esc(title)}<b>{value:,}</b></div>'
                   for key, title, value in cards)
    return f'<section id="summary" class="cards">{body}</section>'


def _quota(resources: list[ResourceUse], cloud_applies: bool) -> str:
    if not resources:
        return '<span class="note">unknown</span>'
    items = []
    for r in resources:
        limits = [lim for lim in (r.pool_limit, r.cloud_limit) if lim is not None]
        limit = min(limits) if limits else None
        # Turns amber past 70% and red past 90% of the limit.
        meter = (f'<meter min="0" max="{limit:g}" low="{0.7 * limit:g}" '
                 f'high="{0.9 * limit:g}" optimum="0" value="{min(r.used, limit):g}"></meter>'
                 if limit else "")
        text = f"{esc(r.name)} <b>{_amount(r.used)}</b> / {_amount(r.pool_limit)}"
        if r.cloud_limit is not None:
            text += f" (cloud {_amount(r.cloud_limit)})"
        items.append(
            f'<li data-resource="{esc(r.name)}" data-used="{r.used:g}" '
            f'data-limit="{"" if limit is None else f"{limit:g}"}">{meter}{text}</li>')
    note = "" if cloud_applies else '<li class="note">ignores the cloud\'s quota</li>'
    return f'<ul class="quota">{"".join(items)}{note}</ul>'


def _providers(snap: StatusSnapshot) -> str:
    rows = []
    for provider in snap.providers:
        for pool in provider.pools:
            rows.append(
                f'<tr class="pool" data-provider="{esc(provider.name)}" '
                f'data-pool="{esc(pool.name)}" data-state="{esc(pool.state)}">'
                f"<td>{esc(provider.name)}</td><td>{esc(pool.name)}</td>"
                f"<td>{_state(pool.state)}</td>"
                f"<td>{_quota(pool.resources, pool.cloud_quota_applies)}</td>"
                f'<td class="wrap">{esc(", ".join(pool.labels))}</td></tr>')
    providers = []
    for provider in snap.providers:
        started = ("" if provider.started else
                   ' <span class="badge bad">not started: see the launcher log</span>')
        providers.append(
            f'<li class="provider" data-provider="{esc(provider.name)}">'
            f"<b>{esc(provider.name)}</b> ({esc(provider.driver)}): "
            f"{provider.launches_in_flight:,} launch"
            f"{'es' if provider.launches_in_flight != 1 else ''} in flight{started}</li>")
    return (
        '<section id="providers"><h2>Providers and pools</h2>'
        f'<ul id="provider-list">{"".join(providers)}</ul>'
        + _table(["Provider", "Pool", "State", "Quota in use / pool limit", "Labels"],
                 rows, "pools")
        + f'<p class="note">{snap.registered_pools} pool'
        f"{'s' if snap.registered_pools != 1 else ''} registered by all launchers. "
        "In use counts every node record of the pool and launches not yet "
        "recorded.</p></section>")


def _nodes(snap: StatusSnapshot) -> str:
    present = set(snap.node_states)
    states = [s for s in models.NODE_STATES if s in present] + sorted(
        present - set(models.NODE_STATES))
    label_rows = []
    for label, counts in snap.label_states.items():
        cells = "".join(
            f'<td class="num{"" if counts.get(s) else " zero"}" data-state="{esc(s)}">'
            f"{counts.get(s, 0):,}</td>" for s in states)
        min_ready = snap.min_ready.get(label)
        label_rows.append(
            f'<tr class="label-count" data-label="{esc(label)}"><td>{esc(label)}</td>'
            f'<td class="num">{"" if min_ready is None else min_ready}</td>'
            f"{_label_cap_cell(snap, label)}{cells}"
            f'<td class="num total">{sum(counts.values()):,}</td></tr>')
    node_rows = []
    now = snap.taken_at
    for node in snap.nodes:
        where = "/".join(esc(x) for x in (node.provider, node.pool) if x)
        node_rows.append(
            f'<tr class="node" data-node-id="{esc(node.id)}" data-state="{esc(node.state)}">'
            f"<td><code>{esc(node.id)}</code></td><td>{esc(', '.join(node.labels))}</td>"
            f"<td>{where}</td><td>{_state(node.state)}</td>{_age_cell(node.state_time, now)}"
            f"<td><code>{esc(node.allocated_to)}</code></td>"
            f"<td>{'locked' if node.locked else ''}</td><td>{esc(node.az)}</td></tr>")
    shown = (f"The {len(snap.nodes):,} most recently changed of {snap.node_total:,} nodes; "
             'every node: <a href="node-list">node-list</a>.'
             if snap.node_total > len(snap.nodes) else f"All nodes ({snap.node_total:,}).")
    unreadable = ""
    if snap.unreadable_nodes:
        unreadable = (f'<p class="bad" id="unreadable">{snap.unreadable_nodes:,} node '
                      "record(s) cannot be read by this version; 'nodepool list' shows "
                      "them and 'nodepool delete' removes them.</p>")
    return (
        '<section id="nodes"><h2>Nodes by label and state</h2>'
        + _table(["Label", "min-ready", "max-servers (in use)", *[esc(s) for s in states],
                  "Total"], label_rows, "label-states")
        + unreadable
        + f'<h3>Nodes</h3><p class="note">{shown}</p>'
        + _table(["ID", "Label", "Provider/pool", "State", "In state for", "Allocated to",
                  "Lock", "AZ"], node_rows, "node-table")
        + "</section>")


def _label_cap_cell(snap: StatusSnapshot, label: str) -> str:
    """The label's own max-servers and what counts against it (records
    and launches not recorded yet), flagged when full."""
    cap = snap.max_servers.get(label)
    if cap is None:
        return '<td class="num max-servers"></td>'
    in_use = snap.label_in_use.get(label, 0)
    full = ' <span class="badge warn">full</span>' if in_use >= cap else ""
    return (f'<td class="num max-servers" data-max-servers="{cap:g}" '
            f'data-in-use="{in_use}">{cap:g} ({in_use:,}){full}</td>')


def _requests(snap: StatusSnapshot) -> str:
    labels = {"capacity": "waiting for capacity", "declined": "declined by some pools",
              "no-pool": "no pool offers their labels", "served": "being served",
              "fulfilled": "fulfilled", "failed": "failed"}
    counts = ", ".join(
        f'<span data-reason="{code}">{snap.request_reasons[code]:,} {labels[code]}</span>'
        for code in REASON_ORDER if snap.request_reasons.get(code))
    rows = []
    now = snap.taken_at
    for r in snap.requests:
        rows.append(
            f'<tr class="request" data-request-id="{esc(r.id)}" data-state="{esc(r.state)}" '
            f'data-reason="{esc(r.reason_code)}"><td><code>{esc(r.id)}</code></td>'
            f"<td>{_state(r.state)}</td><td>{esc(', '.join(r.labels))}</td>"
            f"{_age_cell(r.since, now)}"
            f'<td class="num">{esc(r.priority)}/{r.relative_priority}</td>'
            f'<td class="wrap reason">{esc(r.reason)}</td>'
            f"<td>{esc(', '.join(r.nodes))}</td></tr>")
    shown = (f"The first {REQUEST_ROWS:,} of {snap.request_total:,}, open ones in the "
             'order pools serve them; every request: <a href="request-list">'
             "request-list</a>." if snap.request_total > len(snap.requests) else
             "Open requests in the order pools serve them, then those done.")
    return (
        f'<section id="requests"><h2>Requests ({snap.request_total:,})</h2>'
        f'<p id="request-reasons">{counts or "No requests."}</p>'
        f'<p class="note">{shown}</p>'
        + _table(["ID", "State", "Labels", "Age", "Priority", "Why", "Nodes"], rows,
                 "request-table")
        + "</section>")


def _images(snap: StatusSnapshot) -> str:
    now = snap.taken_at
    builds = [
        f'<tr class="build" data-image="{esc(b.image)}" data-build-id="{esc(b.build_id)}">'
        f"<td>{esc(b.image)}</td><td><code>{esc(b.build_id)}</code></td>"
        f"<td>{_state(b.state)}</td>{_age_cell(b.state_time, now)}"
        f"<td>{esc(','.join(b.formats))}</td><td>{esc(b.builder)}</td></tr>"
        for b in snap.builds]
    uploads = [
        f'<tr class="upload" data-image="{esc(u.image)}" data-provider="{esc(u.provider)}" '
        f'data-upload-id="{esc(u.upload_id)}" '
        f'data-validation="{esc(u.validation_state)}"><td>{esc(u.image)}</td>'
        f"<td>{esc(u.provider)}</td><td><code>{esc(u.build_id)}</code></td>"
        f"<td>{esc(u.upload_id)}</td><td>{_state(u.state)}</td>"
        f'<td class="wrap validation">{_validation(u.validation, u.validation_state)}</td>'
        f"{_age_cell(u.state_time, now)}<td>{esc(u.external_name)}</td>"
        f"<td><code>{esc(u.external_id)}</code></td></tr>"
        for u in snap.uploads]
    flags = []
    if snap.paused_images:
        flags.append("Paused: " + esc(", ".join(snap.paused_images)) + ".")
    if snap.build_requests:
        flags.append("Build requested: " + esc(", ".join(snap.build_requests)) + ".")
    return (
        '<section id="images"><h2>Images</h2>'
        + (f'<p class="note" id="image-flags">{" ".join(flags)}</p>' if flags else "")
        + "<h3>Builds</h3>"
        + _table(["Image", "Build", "State", "Age", "Formats", "Builder"], builds,
                 "build-table")
        + "<h3>Uploads</h3>"
        + _table(["Image", "Provider", "Build", "Upload", "State", "Check before service",
                  "Age", "Cloud name", "Cloud ID"], uploads, "upload-table")
        + '<p class="note">Uploads of diskimages with <code>validation</code> serve '
        "requests once a launcher has booted a node from them and their check "
        "passed; until then (or when it fails) the previous upload serves.</p>"
        + "</section>")


def _validation(text: str | None, state: str | None) -> str:
    if text is None:
        return ""
    return f'<span class="va-{esc(state)}">{esc(text)}</span>'



def _provider_errors(provider: ProviderStatus, now: float) -> str:
    rows = [
        f'<tr class="launch-error" data-provider="{esc(provider.name)}" '
        f'data-node-id="{esc(e.node_id)}" data-outcome="{esc(e.outcome)}">'
        f"{_age_cell(e.time, now)}<td><code>{esc(e.node_id)}</code></td>"
        f"<td>{esc(', '.join(e.labels))}</td><td>{esc(e.pool)}</td>"
        f"<td>{_state(e.outcome)}</td><td class=\"wrap\">{esc(e.error)}</td>"
        f"<td><code>{esc(e.request_id)}</code></td></tr>"
        for e in provider.errors]
    return (f'<h3 data-provider="{esc(provider.name)}">{esc(provider.name)}</h3>'
            + _table(["Ago", "Node", "Labels", "Pool", "Outcome", "Error", "Request"], rows,
                     f"errors-{esc(provider.name)}"))


def _errors(snap: StatusSnapshot) -> str:
    body = "".join(_provider_errors(p, snap.taken_at) for p in snap.providers)
    return (
        '<section id="errors"><h2>Recent launch errors</h2>'
        '<p class="note">The latest launches that ended without a node, per provider, '
        "since this launcher started (or the provider's configuration last changed); "
        "<i>aborted</i> means the cloud refused for lack of quota and the request "
        "waits.</p>" + (body or '<p class="note">No providers.</p>') + "</section>")


def _footer() -> str:
    links = " ".join(f'<a href="{p}">{p}</a>' for p in (
        "node-list", "request-list", "label-list", "image-list", "dib-image-list",
        "image-status"))
    return (f'<footer><p class="meta">Listings: {links}. Lists show at most '
            f"{NODE_ROWS:,} nodes and {REQUEST_ROWS:,} requests.</p></footer>")
