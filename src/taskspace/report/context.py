"""What sections share while one page is built: templates, datasets, images and data.

Images of a dataset are embedded once per page in a pool (``data:`` URIs keyed by dataset
index) that the page's script puts into ``<img data-pool data-i>`` elements, so a gallery,
the split viewer and the quiz can show the same image without repeating it. Figures (PNG
files of the run, or plots drawn now) are embedded as ``data:`` URIs, so the page works
from ``file://`` with nothing beside it.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import hashlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup
from PIL import Image

from taskspace.config import apply_overrides
from taskspace.data import ImageDataset, load_splits
from taskspace.data.config import DataConfig, load_data
from taskspace.errors import TaskspaceError
from taskspace.report.mpl import pyplot
from taskspace.report.run_view import RunView

__all__ = ["PageContext", "fmt"]

TEMPLATES = Path(__file__).parent / "templates"


def fmt(value: Any, digits: int = 3) -> str:
    """A table cell: numbers rounded to ``digits`` decimals, everything else as text."""
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value).lower()
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        x = float(value)
    except (TypeError, ValueError):
        return str(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return value
    return f"{x:.{digits}f}" if abs(x) >= 10 ** (-digits) or x == 0 else f"{x:.1e}"


def png_uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


class PageContext:
    """Templates, the dataset cache, the image pool and the page's JSON data blocks."""

    def __init__(self, progress: bool = False) -> None:
        self.env = jinja2.Environment(
            loader=jinja2.FileSystemLoader(TEMPLATES),
            autoescape=jinja2.select_autoescape(["html", "j2"]),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["fmt"] = fmt
        self.progress = progress
        self.images: dict[str, dict[int, str]] = {}
        self.data_blocks: dict[str, str] = {}
        self._datasets: dict[str, tuple[ImageDataset | None, str]] = {}

    # ------------------------------------------------------------------ templates
    def render(self, template: str, **values: Any) -> str:
        return self.env.get_template(template).render(ctx=self, **values)

    def table(
        self,
        rows: Sequence[dict[str, Any]],
        columns: Sequence[str] | None = None,
        *,
        caption: str = "",
        limit: int | None = None,
        sortable: bool = True,
        fold_over: int = 25,
    ) -> Markup:
        """An HTML table (sortable by a click on a header); ``limit`` keeps the first rows,
        and a table of more than ``fold_over`` rows starts folded."""
        columns = list(columns or (rows[0].keys() if rows else []))
        shown = list(rows if limit is None else rows[:limit])
        return Markup(
            self.render(
                "table.html.j2",
                rows=shown,
                columns=columns,
                caption=caption,
                sortable=sortable,
                hidden=len(rows) - len(shown),
                folded=len(rows) > fold_over,
                total=len(rows),
            )
        )

    # ------------------------------------------------------------------ figures
    def figure_file(self, path: Path) -> str | None:
        """A PNG file of the run as a ``data:`` URI (``None`` when missing)."""
        return png_uri(path.read_bytes()) if path.is_file() else None

    def figure(self, fig: Any) -> str:
        """A matplotlib figure drawn now, as a ``data:`` URI (the figure is closed)."""
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        pyplot().close(fig)
        return png_uri(buf.getvalue())

    # ------------------------------------------------------------------ data blocks
    def add_json(self, prefix: str, data: Any) -> str:
        """Embed ``data`` as a JSON block for the page's script; returns its element id."""
        key = f"{prefix}-{len(self.data_blocks)}"
        self.data_blocks[key] = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
        return key

    # ------------------------------------------------------------------ datasets
    def dataset(self, run: RunView) -> tuple[ImageDataset | None, str]:
        """The run's dataset (with the run's own splits when it saved them) and its pool
        key, or ``(None, reason)`` when it cannot be loaded here."""
        data = _data_options(run)
        if data is None:
            return None, "the run's config names no dataset"
        key = hashlib.sha1(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()
        key = key[:10]
        if key not in self._datasets:
            self._datasets[key] = self._load(data, key)
        ds, why = self._datasets[key]
        if ds is not None and (run / "splits.npz").is_file():
            with contextlib.suppress(TaskspaceError):  # else the dataset's own splits stay
                ds.use_splits(load_splits(run / "splits.npz", len(ds)))
        return ds, why

    def _load(self, data: dict[str, Any], key: str) -> tuple[ImageDataset | None, str]:
        fields = {f.name for f in dataclasses.fields(DataConfig)}
        try:
            cfg = apply_overrides(DataConfig(), {k: v for k, v in data.items() if k in fields})
            return load_data(cfg, progress=self.progress), key
        except (TaskspaceError, OSError) as err:
            return None, f"its images could not be loaded ({err})"

    def pool(self, key: str, dataset: ImageDataset, indices: Sequence[int]) -> None:
        """Put images ``indices`` of ``dataset`` into the page's pool ``key``."""
        pool = self.images.setdefault(key, {})
        for i in indices:
            i = int(i)
            if i not in pool:
                pool[i] = thumbnail(dataset, i)

    def image_pool_json(self) -> str:
        return json.dumps(self.images, separators=(",", ":"))


def thumbnail(dataset: ImageDataset, i: int) -> str:
    """Image ``i`` as a PNG ``data:`` URI at its stored size (the page scales it up)."""
    img = dataset.images[i].numpy()
    arr = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0))
    buf = io.BytesIO()
    Image.fromarray(arr.astype(np.uint8)).save(buf, format="PNG", optimize=True)
    return png_uri(buf.getvalue())


def _data_options(run: RunView) -> dict[str, Any] | None:
    """The ``data.*`` options of a run (or of the split run it read), as a mapping."""
    source = run.option("splits")
    if isinstance(source, str) and (Path(source) / "config.yaml").is_file():
        return _data_options(RunView(source))
    data = run.config.get("data")
    if isinstance(data, dict):
        return data
    if isinstance(data, str):  # a run directory from before the options were nested
        flat = {"name": data}
        for key in ("root", "split_seed", "heldout", "train_size", "test_size"):
            if key in run.config:
                flat[key] = run.config[key]
        return flat
    return None
