"""Padding-free DistilBERT: a batch's sequences packed end to end, no pad token computed.

The classifier below runs the checkpoint's own modules (embeddings, attention projections, layer
norms, FFN, head, quantized or not) over tokens packed into one ``(tokens, dim)`` matrix;
attention runs per sequence through a variable-length kernel: FlashAttention's
(``torch.nn.attention.varlen``, 128-row query tiles) or the memory-efficient one
(``aten._efficient_attention_forward``, 64-row tiles, less of each tile wasted on a 26-token
sentence); or FlexAttention over all packed tokens with a block mask that keeps each token
within its sequence (tiles shared by several short sequences), the mask built in the forward or
once per batch outside it (``document_masks``). With ``cls_last`` the last layer is computed
for each sequence's first token only, the one token the classification head reads: the outputs
are the same, with about a seventh of the matrix products less. With ``epilogue`` the FFN's
bias and GELU run in its first matrix product's epilogue (``torch._addmm_activation``); with
``tanh_gelu`` the GELU takes that same tanh form as an element-wise op a compile fuses onward.
"""

from __future__ import annotations

import torch

from effbert.data import Batch


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
    """Padded ``(batch, length)`` tokens to packed model inputs (on the host, outside windows).

    Returns:
        ``input_ids`` and ``position_ids`` of shape ``(tokens,)``, ``cu_seqlens`` (int32, the
        start of each sequence and the total), ``max_len`` (an int) and ``lengths`` (a list).
    """
    mask = attention_mask.bool()
    lengths = mask.sum(1)
    positions = torch.arange(mask.shape[1]).expand_as(mask)
    if not torch.equal(mask, positions < lengths[:, None]):
        raise ValueError("packing needs right-padded inputs (pad tokens after each sequence)")
    cu_seqlens = torch.zeros(len(lengths) + 1, dtype=torch.int32)
    cu_seqlens[1:] = lengths.cumsum(0)
    return {
        "input_ids": input_ids[mask],
        "position_ids": positions[mask],
        "cu_seqlens": cu_seqlens,
        "max_len": int(lengths.max()),
        "lengths": lengths.tolist(),
    }


def packed_inputs(batch: Batch, device: torch.device) -> dict:
    """A batch's packed inputs on ``device``; ``lengths`` stays a host list."""
    packed = pack(batch.input_ids, batch.attention_mask)
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in packed.items()}


def document_masks(cu_seqlens, n_tokens: int, cls_last: bool, block: int | None = None) -> dict:
    """FlexAttention block masks of packed tokens: each attends within its own sequence; for
    the last layer of ``cls_last`` (key True), sequence i's first token (query i) attends to
    sequence i. ``block``: tile size (FlexAttention's default where None)."""
    from torch.nn.attention.flex_attention import create_block_mask

    n = cu_seqlens.shape[0] - 1
    device = cu_seqlens.device
    positions = torch.arange(n_tokens, device=device)
    document = torch.searchsorted(cu_seqlens[1:].long(), positions, right=True)

    def same_document(b, h, q_idx, kv_idx):
        return document[q_idx] == document[kv_idx]

    def own_document(b, h, q_idx, kv_idx):
        return q_idx == document[kv_idx]

    sizes = {} if block is None else {"BLOCK_SIZE": block}
    full = create_block_mask(same_document, None, None, n_tokens, n_tokens, device, **sizes)
    if not cls_last:
        return {False: full}
    first = create_block_mask(own_document, None, None, n, n_tokens, device, **sizes)
    return {False: full, True: first}


class PackedClassifier(torch.nn.Module):
    """A ``DistilBertForSequenceClassification``'s modules run over packed sequences.

    Args:
        kernel: ``flash`` or ``memory-efficient`` (variable-length kernels), or ``flex``.
        flex_block: FlexAttention's tile size where the block masks come with the inputs.
    """

    def __init__(
        self,
        classifier: torch.nn.Module,
        cls_last: bool = False,
        kernel: str = "flash",
        flex_block: int | None = None,
        epilogue: bool = False,
        qkv: bool = False,
        tanh_gelu: bool = False,
    ) -> None:
        super().__init__()
        self.classifier_model = classifier
        self.cls_last, self.kernel, self.epilogue = cls_last, kernel, epilogue
        self.tanh_gelu = tanh_gelu
        self.flex, self.flex_block = kernel == "flex", flex_block
        config = classifier.config
        self.n_heads, self.head_dim = config.n_heads, config.dim // config.n_heads
        # one matrix product for the query, key and value projections of each layer
        self.qkv = (
            torch.nn.ModuleList(_FusedQKV(layer.attention) for layer in _layers(classifier))
            if qkv
            else None
        )

    def forward(
        self, input_ids, position_ids, cu_seqlens, max_len: int, lengths=None, block_masks=None
    ):
        model = self.classifier_model
        bert = model.distilbert
        emb = bert.embeddings
        hidden = emb.LayerNorm(
            emb.word_embeddings(input_ids) + emb.position_embeddings(position_ids)
        )
        layers = bert.transformer.layer
        starts = cu_seqlens[:-1].long()
        masks = block_masks
        if self.flex and masks is None:
            masks = document_masks(cu_seqlens, input_ids.shape[0], self.cls_last)
        for i, layer in enumerate(layers):
            last = self.cls_last and i == len(layers) - 1
            attend = None
            if self.flex:
                attend = lambda q, k, v, m=masks[last]: _flex(q, k, v, m, self.flex_block)  # noqa: E731
            hidden = self._block(
                layer,
                hidden,
                cu_seqlens,
                max_len,
                lengths,
                starts if last else None,
                attend,
                self.qkv[i] if self.qkv is not None else None,
            )
        pooled = hidden if self.cls_last else hidden[starts]
        pooled = torch.relu(model.pre_classifier(pooled))
        return model.classifier(pooled)

    def _block(
        self, layer, hidden, cu_seqlens, max_len, lengths, query_rows, attend=None, qkv=None
    ):
        attn = layer.attention
        shape = (-1, self.n_heads, self.head_dim)
        residual = hidden if query_rows is None else hidden[query_rows]
        if qkv is None:
            q = attn.q_lin(residual).view(shape)
            k = attn.k_lin(hidden).view(shape)
            v = attn.v_lin(hidden).view(shape)
        elif query_rows is None:  # one product, three views of its columns
            q, k, v = (x.view(shape) for x in qkv(hidden).chunk(3, dim=-1))
        else:  # cls_last: queries of the first tokens only, keys and values of all
            q = attn.q_lin(residual).view(shape)
            k, v = (x.view(shape) for x in qkv.key_value(hidden).chunk(2, dim=-1))
        if attend is not None:
            out = attend(q, k, v)
        else:
            out = self._attend(q, k, v, cu_seqlens, max_len, lengths, query_rows is not None)
        hidden = layer.sa_layer_norm(attn.out_lin(out.reshape(q.shape[0], -1)) + residual)
        ffn = layer.ffn
        if self.epilogue:  # bias and GELU in the GEMM's epilogue (tanh GELU in cuBLASLt)
            inner = torch._addmm_activation(
                ffn.lin1.bias, hidden, ffn.lin1.weight.t(), use_gelu=True
            )
        elif self.tanh_gelu:  # element-wise, for a compile to fuse with the next cast
            inner = torch.nn.functional.gelu(ffn.lin1(hidden), approximate="tanh")
        else:
            inner = ffn.activation(ffn.lin1(hidden))
        return layer.output_layer_norm(ffn.lin2(inner) + hidden)

    def _attend(self, q, k, v, cu_seqlens, max_len, lengths, one_query):
        n = cu_seqlens.shape[0] - 1
        cu_q = torch.arange(n + 1, dtype=torch.int32, device=q.device) if one_query else cu_seqlens
        max_q = 1 if one_query else max_len
        if q.is_cuda and self.kernel == "memory-efficient":
            out = torch.ops.aten._efficient_attention_forward(
                q.unsqueeze(0),
                k.unsqueeze(0),
                v.unsqueeze(0),
                None,
                cu_q,
                cu_seqlens,
                max_q,
                max_len,
                0.0,
                0,
            )[0]
            return out.squeeze(0)
        if q.is_cuda:
            from torch.nn.attention.varlen import varlen_attn

            return varlen_attn(q, k, v, cu_q, cu_seqlens, max_q, max_len)
        # CPU: the same attention one sequence at a time (varlen kernels are CUDA-only)
        outs, start = [], 0
        for i, length in enumerate(lengths):
            qs = q[i : i + 1] if one_query else q[start : start + length]
            ks, vs = k[start : start + length], v[start : start + length]
            o = torch.nn.functional.scaled_dot_product_attention(
                qs.transpose(0, 1), ks.transpose(0, 1), vs.transpose(0, 1)
            )
            outs.append(o.transpose(0, 1))
            start += length
        return torch.cat(outs)


def _flex(q, k, v, block_mask, block: int | None = None):
    """FlexAttention over packed ``(tokens, heads, dim)`` inputs with a document block mask;
    ``block``: the kernel's query and key tiles (the mask's)."""
    from torch.nn.attention.flex_attention import flex_attention

    heads_first = [x.transpose(0, 1).unsqueeze(0).contiguous() for x in (q, k, v)]
    options = {"BLOCK_M": block, "BLOCK_N": block} if block and q.is_cuda else None
    out = flex_attention(*heads_first, block_mask=block_mask, kernel_options=options)
    return out.squeeze(0).transpose(0, 1)


def _layers(classifier: torch.nn.Module):
    return classifier.distilbert.transformer.layer


class _FusedQKV(torch.nn.Module):
    """A layer's query, key and value projections as one ``(3 d, d)`` matrix product."""

    def __init__(self, attention: torch.nn.Module) -> None:
        super().__init__()
        lins = (attention.q_lin, attention.k_lin, attention.v_lin)
        self.weight = torch.nn.Parameter(torch.cat([x.weight for x in lins]), requires_grad=False)
        self.bias = torch.nn.Parameter(torch.cat([x.bias for x in lins]), requires_grad=False)
        self.dim = attention.q_lin.weight.shape[0]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden, self.weight, self.bias)

    def key_value(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.linear(hidden, self.weight[self.dim :], self.bias[self.dim :])
