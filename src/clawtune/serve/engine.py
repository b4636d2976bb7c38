"""The in-process engine: one base model in memory, many LoRA adapters, requests for different adapters batched.

A scheduler thread takes up to `batch_size` waiting requests (whatever adapters they ask for), left-pads them into
one batch and decodes them together with a KV cache; each row's adapter (or none) is applied in the same forward pass
by gathering stacked LoRA matrices per row (`serve/lora.py`). Tokens are pushed to each request's queue as they are decoded, so streaming clients see them
at once. Requests that arrive meanwhile wait for the next batch. Adapters load and unload at run time (the scheduler
is paused between batches while the model changes); each adapter's manifest is checked as everywhere in clawtune.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clawtune.generation import stop_token_ids
from clawtune.models import ModelLoadError, load_model, load_tokenizer
from clawtune.problems import InputError


class EngineError(InputError):
    """An adapter cannot be loaded or a request cannot be run; says why."""


@dataclass
class GenRequest:
    """One generation: prompt token ids in, events out on `events` (("text", str), ("done", finish, n_tokens))."""

    prompt_ids: list[int]
    adapter: str | None
    max_new_tokens: int
    temperature: float = 0.0
    top_p: float = 1.0
    stop: list[str] = field(default_factory=list)
    seed: int | None = None
    # Anything with put(): a queue.Queue, or the gateway's bridge into its event loop.
    events: Any = field(default_factory=queue.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)
    emitted: bool = False  # something went out on `events` (so the request cannot be run again)
    ended: bool = False  # its done or error event went out

    def emit(self, event: tuple[Any, ...]) -> None:
        self.emitted = True
        if event[0] in ("done", "error"):
            self.ended = True
        self.events.put(event)

    def fail(self, exc: BaseException) -> None:
        if not self.ended:
            self.emit(("error", f"{type(exc).__name__}: {exc}"))


@dataclass
class LoadedAdapter:
    name: str
    path: str
    weight: float
    template: str
    manifest: dict[str, Any]


class Engine:
    """Holds the base model and its adapters; runs GenRequests in mixed-adapter batches on a scheduler thread."""

    def __init__(
        self,
        base_model: str,
        device: str | None = None,
        batch_size: int = 8,
        max_context: int | None = None,
        allow_base_mismatch: bool = False,
    ) -> None:
        import torch

        self.base_name = base_model
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.tokenizer, _ = load_tokenizer(base_model)
        self.tokenizer.model_max_length = 1 << 30  # the context check is ours (max_context), with a clear error
        self.model: Any = load_model(base_model, dtype=self.dtype).to(self.device).eval()
        config = self.model.config
        native = int(getattr(config, "max_position_embeddings", 4096) or 4096)
        self.max_context = min(native, max_context) if max_context else native
        self.batch_size = batch_size
        self.allow_base_mismatch = allow_base_mismatch
        self.adapters: dict[str, LoadedAdapter] = {}
        from clawtune.serve.lora import MultiLoRA

        self.lora = MultiLoRA(self.model)
        # the same set `ft evaluate` stops at (`clawtune.generation`): evaluation measures what is served
        self.stop_ids = stop_token_ids(self.tokenizer, self.model.generation_config)
        self._queue: queue.Queue[GenRequest] = queue.Queue()
        self._model_lock = threading.Lock()
        self._closed = threading.Event()
        self.batches = 0
        self.batched_requests = 0
        self._thread = threading.Thread(target=self._loop, name="clawtune-engine", daemon=True)
        self._thread.start()

    # ---- adapters ----------------------------------------------------------------------------------------------

    def add_adapter(
        self, name: str, path: str, weight: float = 1.0, extra: list[tuple[str, float]] | None = None
    ) -> LoadedAdapter:
        """Load a clawtune adapter folder (checkpoint or export) under `name`, its manifest checked first; `extra`
        adapters (path, weight) are served together with it as one model (concatenated along the rank)."""
        from clawtune.serve.lora import LoRAError, adapter_matrices

        if name in self.adapters:
            raise EngineError(f"an adapter named {name!r} is already loaded")
        parts, manifests = [], []
        for source, source_weight in [(path, weight), *(extra or [])]:
            folder = Path(source).expanduser()
            manifests.append(self._check(folder))
            try:
                parts.append(adapter_matrices(folder, source_weight))
            except InputError as exc:  # a refused feature or a broken adapter: the message names the file
                raise EngineError(str(exc)) from None
            except (OSError, KeyError, ValueError) as exc:
                raise EngineError(f"{folder}: cannot read the adapter: {exc}") from None
        folder = Path(path).expanduser()
        template_file = folder / "chat_template.jinja"
        template = (
            template_file.read_text(encoding="utf-8") if template_file.is_file() else self.tokenizer.chat_template
        )
        with self._model_lock:
            try:
                self.lora.add(name, parts)
            except LoRAError as exc:
                raise EngineError(str(exc)) from None
        loaded = LoadedAdapter(name, str(folder), weight, template, manifests[0])
        self.adapters[name] = loaded
        return loaded

    def _check(self, folder: Path) -> dict[str, Any]:
        from clawtune.artifacts.manifest import MANIFEST, read_manifest
        from clawtune.models.checkpoint import verify_base, verify_files

        if not (folder / MANIFEST).is_file():
            raise EngineError(f"{folder}: not a clawtune adapter (no {MANIFEST}); export one with clawtune ft export")
        manifest = read_manifest(folder)
        verify_files(folder, manifest)
        if manifest.get("kind") not in ("lora", "qlora"):
            raise EngineError(f"{folder}: a {manifest.get('kind')} model, not a LoRA adapter")
        base = manifest.get("base_model") or ""
        if base != self.base_name and _resolved(base) != _resolved(self.base_name) and not self.allow_base_mismatch:
            raise EngineError(
                f"{folder}: trained on {base}, but this server holds {self.base_name}; "
                "an adapter on another base behaves erratically"
            )
        verify_base(folder, manifest, self.allow_base_mismatch)
        return manifest

    def remove_adapter(self, name: str) -> None:
        if name not in self.adapters:
            raise EngineError(f"no adapter named {name!r} is loaded")
        with self._model_lock:
            self.lora.remove(name)
        del self.adapters[name]

    # ---- prompts -----------------------------------------------------------------------------------------------

    def template(self, adapter: str | None) -> str:
        return self.adapters[adapter].template if adapter else str(self.tokenizer.chat_template)

    def render(self, adapter: str | None, messages: list[dict[str, Any]], tools: Any) -> list[int]:
        """The prompt ids, rendered with the template this adapter was trained with (the training renderer)."""
        from clawtune.artifacts.render import render_text, template_messages

        tokenizer = self.tokenizer
        template = self.template(adapter)
        text = render_text(_with_template(tokenizer, template), template_messages(messages), tools, True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])

    # ---- scheduling --------------------------------------------------------------------------------------------

    def submit(self, request: GenRequest) -> None:
        if self._closed.is_set():
            raise EngineError("the engine is shutting down")
        self._queue.put(request)

    def pending(self) -> int:
        return self._queue.qsize()

    def close(self) -> None:
        self._closed.set()
        self._queue.put(GenRequest([], None, 0))  # wake the loop
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._closed.is_set():
            first = self._queue.get()
            if self._closed.is_set():
                break
            batch = [first]
            deadline = time.monotonic() + 0.004  # a few ms to let concurrent arrivals join this batch
            while len(batch) < self.batch_size:
                try:
                    batch.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    break
            batch = [r for r in batch if not r.cancelled.is_set() and r.prompt_ids]
            if not batch:
                continue
            with self._model_lock:
                self._run_isolated(batch)

    def _run_isolated(self, batch: list[GenRequest]) -> None:
        """Run a batch so that a request's failure is its own. Per-row work (sampling, decoding, stop strings) is
        guarded row by row in `_run`; if the batch's forward pass itself fails, the rows that have sent nothing yet
        run again one at a time, and only those that fail alone (or had already streamed) get the error."""
        try:
            self._run(batch)
        except Exception as exc:
            for request in batch:
                if request.ended:
                    continue
                if request.emitted or len(batch) == 1:
                    request.fail(exc)
                    continue
                try:
                    self._run([request])
                except Exception as alone:
                    request.fail(alone)

    def _run(self, batch: list[GenRequest]) -> None:
        import torch

        self.batches += 1
        self.batched_requests += len(batch)
        n = len(batch)
        width = max(len(r.prompt_ids) for r in batch)
        pad = self.tokenizer.pad_token_id or 0
        ids = torch.full((n, width), pad, dtype=torch.long)
        mask = torch.zeros((n, width), dtype=torch.long)
        for i, r in enumerate(batch):
            ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        generators: list[Any] = []
        failed = [False] * n
        for i, r in enumerate(batch):
            try:
                generators.append(_generator(r.seed))
                r.stop = [s for s in r.stop if isinstance(s, str) and s]
            except Exception as exc:  # this row cannot start; the others do
                generators.append(None)
                failed[i] = True
                r.fail(exc)
        generated: list[list[int]] = [[] for _ in batch]
        sent = [""] * n
        finished = ["error" if f else "" for f in failed]
        steps = max(r.max_new_tokens for r in batch)
        past = None
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        inputs = ids
        with torch.no_grad(), self.lora.rows([r.adapter for r in batch], self.device):
            for _ in range(steps):
                out = self.model(
                    input_ids=inputs,
                    attention_mask=mask,
                    position_ids=positions,
                    past_key_values=past,
                    use_cache=True,
                    logits_to_keep=1,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                greedy = logits.argmax(-1).tolist()  # one op for every row that does not sample
                next_ids = []
                for i, r in enumerate(batch):
                    if finished[i]:
                        next_ids.append(pad)
                        continue
                    try:
                        token = self._step(r, i, logits, greedy, generators, generated, sent, finished)
                    except Exception as exc:  # this row's failure is its own: it stops, the batch goes on
                        finished[i] = "error"
                        r.fail(exc)
                        token = pad
                    next_ids.append(token)
                if all(finished):
                    break
                inputs = torch.tensor(next_ids, device=self.device).unsqueeze(1)
                mask = torch.cat([mask, torch.ones((n, 1), dtype=mask.dtype, device=self.device)], dim=1)
                positions = positions[:, -1:] + 1
        for i, r in enumerate(batch):
            if not finished[i]:
                r.emit(("done", "length", len(generated[i])))

    def _step(
        self,
        r: GenRequest,
        i: int,
        logits: Any,
        greedy: list[int],
        generators: list[Any],
        generated: list[list[int]],
        sent: list[str],
        finished: list[str],
    ) -> int:
        """One decoding step of row i: pick its token, stream its new text, decide whether it has finished."""
        token = _pick(logits[i], r, generators[i]) if r.temperature and r.temperature > 0 else greedy[i]
        if r.cancelled.is_set():
            finished[i] = "cancelled"
            return token
        if token in self.stop_ids:
            finished[i] = "stop"
        else:
            generated[i].append(token)
            text = str(self.tokenizer.decode(generated[i], skip_special_tokens=False))
            stop_at = _stop_position(text, r.stop)
            if stop_at is not None:
                text, finished[i] = text[:stop_at], "stop"
            if not text.endswith("\ufffd") and len(text) > len(sent[i]) and text.startswith(sent[i]):
                r.emit(("text", text[len(sent[i]) :]))
                sent[i] = text
            if not finished[i] and len(generated[i]) >= r.max_new_tokens:
                finished[i] = "length"
        if finished[i]:
            r.emit(("done", finished[i], len(generated[i])))
        return token


def _resolved(name: str) -> str:
    from clawtune.models import resolve

    try:
        return resolve(name)
    except ModelLoadError:
        return name


_TEMPLATED: dict[tuple[int, int], Any] = {}


def _with_template(tokenizer: Any, template: str) -> Any:
    """The tokenizer with another chat template, without copying it for every request."""
    if tokenizer.chat_template == template:
        return tokenizer
    key = (id(tokenizer), hash(template))
    if key not in _TEMPLATED:
        import copy

        other = copy.copy(tokenizer)
        other.chat_template = template
        _TEMPLATED[key] = other
    return _TEMPLATED[key]


def _generator(seed: int | None) -> Any:
    import torch

    if seed is None:
        return None
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def _pick(logits: Any, request: GenRequest, generator: Any) -> int:
    """Sampling at the request's temperature, with top-p."""
    import torch

    probs = torch.softmax(logits / request.temperature, dim=-1).cpu()
    if request.top_p < 1.0:
        ordered, index = probs.sort(descending=True)
        keep = ordered.cumsum(-1) - ordered < request.top_p
        keep[0] = True  # top_p 0 keeps the most likely token (greedy), never nothing
        probs = torch.zeros_like(probs).scatter(0, index[keep], ordered[keep])
    return int(torch.multinomial(probs / probs.sum(), 1, generator=generator))


def _stop_position(text: str, stops: list[str]) -> int | None:
    found = [text.find(s) for s in stops if s and s in text]
    return min(found) if found else None
