"""From raw text to labels on the host: tokenization in worker processes, batching, the copy
to the device, the forward pass and the arg-max back (``scope: end_to_end``)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch

from effbert import data
from effbert.energy import synchronize
from effbert.models import INT8_MIN_ROWS, pad_to_rows
from effbert.packed import pack
from effbert.plan import Cell


def end_to_end_pass(
    prepared, tokenizer, rows, cell: Cell, max_length: int, workers: int = 1
) -> Callable:
    """A pass from raw text to labels on the host: tokenization, batching, the copy to the
    device, the forward pass and the arg-max back, for every row.

    effbert's own path sorts rows by length first (``bucketed`` and ``packed`` padding),
    tokenizes in ``workers`` worker processes of a ``torch.utils.data.DataLoader`` that stay
    alive across passes and run ahead of the device, copies from pinned memory without
    blocking and brings the labels back without waiting batch by batch. The ``pipeline``
    execution hands the same model to ``transformers.pipeline("text-classification")`` as a
    user would.
    """
    texts = rows["text_a"].tolist()
    pairs = None if rows["text_b"].isna().all() else rows["text_b"].tolist()
    device = prepared.device
    if cell.technique.execution == "pipeline":
        from transformers import pipeline

        pipe = pipeline(
            "text-classification", model=prepared.model, tokenizer=tokenizer, device=device
        )
        items = (
            texts
            if pairs is None
            else [{"text": a, "text_pair": b} for a, b in zip(texts, pairs, strict=True)]
        )

        def run_pipeline() -> None:
            pipe(items, batch_size=cell.batch_size, truncation=True, max_length=max_length)

        return run_pipeline
    order = list(range(len(texts)))
    if cell.padding in ("bucketed", "packed"):
        order.sort(key=lambda i: len(texts[i]) + len(pairs[i] if pairs else ""))
    # each batch is tokenized in up to `workers` parts at once, then joined
    parts_per_batch = max(1, min(workers, cell.batch_size // 32))
    part_rows = -(-cell.batch_size // parts_per_batch)
    parts, batch_of_part = [], []
    for b, start in enumerate(range(0, len(order), cell.batch_size)):
        rows_b = order[start : start + cell.batch_size]
        for i in range(0, len(rows_b), part_rows):
            parts.append(rows_b[i : i + part_rows])
            batch_of_part.append(b)
    pin = device.type == "cuda"
    dataset = TokenizedParts(tokenizer, texts, pairs, parts, cell, max_length)
    # one endless stream over the parts, pass after pass: the workers tokenize the next pass
    # while the device computes this one
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=2,
        multiprocessing_context="fork",
    )
    forward = prepared.forward()
    stream = None
    int8 = cell.technique.quantize in ("int8_dynamic", "int8_weight")

    batch_rows: dict[int, list[int]] = {}
    for part, b in zip(parts, batch_of_part, strict=True):
        batch_rows.setdefault(b, []).extend(part)

    def run_e2e(keep_logits: bool = False) -> list:
        """One pass; the labels, or (outside windows) each batch's rows and float logits."""
        nonlocal stream
        if stream is None:
            stream = iter(loader)
        labels, pending = [], []
        for i in range(len(parts)):
            pending.append(next(stream))
            if i + 1 < len(parts) and batch_of_part[i + 1] == batch_of_part[i]:
                continue
            joined = join_parts(pending, dataset.pad_id)
            pending = []
            if int8 and "attention_mask" in joined:
                small = data.Batch(joined["input_ids"], joined["attention_mask"], None)
                small = pad_to_rows(small, INT8_MIN_ROWS)
                joined = {"input_ids": small.input_ids, "attention_mask": small.attention_mask}
            batch = {
                k: v.pin_memory().to(device, non_blocking=True) if pin else v
                for k, v in joined.items()
                if torch.is_tensor(v)
            }
            batch.update({k: v for k, v in joined.items() if not torch.is_tensor(v)})
            if keep_logits:
                logits = forward(batch).float().cpu()
                labels.append((batch_rows[batch_of_part[i]], logits))
            else:
                labels.append(forward(batch).argmax(-1).to("cpu", non_blocking=pin))
        synchronize(device)  # the labels are on the host
        return labels

    def close() -> None:
        nonlocal stream
        stream = None  # the iterator's end stops its worker processes

    run_e2e.close = close
    return run_e2e


def join_parts(parts: list[dict], pad_id: int) -> dict:
    """One batch of tensors from its separately tokenized parts (NumPy arrays): packed parts
    end to end, padded parts padded to the longest."""
    if "cu_seqlens" in parts[0]:
        offsets = np.cumsum([0] + [int(p["cu_seqlens"][-1]) for p in parts[:-1]])
        cu = [parts[0]["cu_seqlens"][:1]]
        cu += [p["cu_seqlens"][1:] + o for p, o in zip(parts, offsets, strict=True)]
        return {
            "input_ids": torch.from_numpy(np.concatenate([p["input_ids"] for p in parts])),
            "position_ids": torch.from_numpy(np.concatenate([p["position_ids"] for p in parts])),
            "cu_seqlens": torch.from_numpy(np.concatenate(cu).astype(np.int32)),
            "max_len": max(p["max_len"] for p in parts),
            "lengths": [n for p in parts for n in p["lengths"]],
        }
    width = max(p["input_ids"].shape[1] for p in parts)

    def widened(key: str, value: int) -> torch.Tensor:
        arrays = [
            np.pad(p[key], ((0, 0), (0, width - p[key].shape[1])), constant_values=value)
            for p in parts
        ]
        return torch.from_numpy(np.concatenate(arrays))

    return {
        "input_ids": widened("input_ids", pad_id),
        "attention_mask": widened("attention_mask", 0),
    }


class TokenizedParts(torch.utils.data.Dataset):
    """Raw rows cut into parts of batches, each tokenized on demand (in a DataLoader worker)
    into NumPy arrays: padded, or packed for a padding-free technique. Index ``i`` is part
    ``i % len(parts)``: the stream runs pass after pass.

    Fast tokenizers are called through their Rust backend (``encode_batch_fast``), which gives
    the ids ``tokenizer(...)`` gives without its per-call Python conversions."""

    def __init__(self, tokenizer, texts, pairs, parts, cell: Cell, max_length: int) -> None:
        self.texts, self.pairs, self.parts = texts, pairs, parts
        self.packed = cell.technique.packed
        self.pad_id = tokenizer.pad_token_id or 0
        self.tokenizer, self.max_length = tokenizer, max_length
        self.fixed = cell.padding == "max_length"
        backend = getattr(tokenizer, "backend_tokenizer", None)
        self.backend = None
        if backend is not None:
            self.backend = copy.deepcopy(backend)
            self.backend.enable_truncation(max_length)
            if self.packed:
                self.backend.no_padding()
            else:
                self.backend.enable_padding(
                    pad_id=self.pad_id,
                    pad_token=tokenizer.pad_token or "[PAD]",
                    length=max_length if self.fixed else None,
                )

    def __len__(self) -> int:
        return len(self.parts) * 10**9

    def __getitem__(self, i: int) -> dict:
        part = self.parts[i % len(self.parts)]
        texts = [self.texts[j] for j in part]
        if self.pairs:
            texts = list(zip(texts, [self.pairs[j] for j in part], strict=True))
        if self.backend is None:
            return self._slow(texts)
        encode = getattr(self.backend, "encode_batch_fast", self.backend.encode_batch)
        encodings = encode(texts)
        if self.packed:
            lengths = [len(e.ids) for e in encodings]
            cu = np.zeros(len(lengths) + 1, dtype=np.int32)
            cu[1:] = np.cumsum(lengths)
            return {
                "input_ids": np.fromiter(
                    (t for e in encodings for t in e.ids), dtype=np.int64, count=int(cu[-1])
                ),
                "position_ids": np.concatenate([np.arange(n) for n in lengths]),
                "cu_seqlens": cu,
                "max_len": max(lengths),
                "lengths": lengths,
            }
        return {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
        }

    def _slow(self, texts) -> dict:
        first = [t[0] for t in texts] if self.pairs else texts
        second = [t[1] for t in texts] if self.pairs else None
        encoded = self.tokenizer(
            first,
            second,
            truncation=True,
            max_length=self.max_length,
            padding="max_length" if self.fixed else "longest",
            return_tensors="np",
        )
        ids, mask = encoded["input_ids"].astype(np.int64), encoded["attention_mask"]
        if not self.packed:
            return {"input_ids": ids, "attention_mask": mask.astype(np.int64)}
        out = pack(torch.from_numpy(ids), torch.from_numpy(mask))
        return {k: v.numpy() if torch.is_tensor(v) else v for k, v in out.items()}
