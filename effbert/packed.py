"""Padding-free DistilBERT: a batch's sequences packed end to end, no pad token computed.

The classifier below runs the checkpoint's own modules (embeddings, attention projections, layer
norms, FFN, head, quantized or not) over tokens packed into one ``(tokens, dim)`` matrix;
attention runs per sequence through flash attention's variable-length kernel
(``torch.nn.attention.varlen``), or, with ``flex``, FlexAttention over all packed tokens
with a block mask that keeps each token within its sequence (tiles shared by several short
sequences instead of one mostly empty tile per sequence). With ``cls_last`` the last layer is
computed for each sequence's first token only, the one token the classification head reads:
the outputs are the same, with about a seventh of the matrix products less.
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


class PackedClassifier(torch.nn.Module):
    """A ``DistilBertForSequenceClassification``'s modules run over packed sequences."""

    def __init__(
        self, classifier: torch.nn.Module, cls_last: bool = False, flex: bool = False
    ) -> None:
        super().__init__()
        self.classifier_model = classifier
        self.cls_last, self.flex = cls_last, flex
        config = classifier.config
        self.n_heads, self.head_dim = config.n_heads, config.dim // config.n_heads

    def forward(self, input_ids, position_ids, cu_seqlens, max_len: int, lengths=None):
        model = self.classifier_model
        bert = model.distilbert
        emb = bert.embeddings
        hidden = emb.LayerNorm(
            emb.word_embeddings(input_ids) + emb.position_embeddings(position_ids)
        )
        layers = bert.transformer.layer
        starts = cu_seqlens[:-1].long()
        masks = self._document_masks(cu_seqlens, input_ids.shape[0]) if self.flex else None
        for i, layer in enumerate(layers):
            last = self.cls_last and i == len(layers) - 1
            attend = (lambda q, k, v, m=masks[last]: _flex(q, k, v, m)) if self.flex else None
            hidden = self._block(
                layer, hidden, cu_seqlens, max_len, lengths, starts if last else None, attend
            )
        pooled = hidden if self.cls_last else hidden[starts]
        pooled = torch.relu(model.pre_classifier(pooled))
        return model.classifier(pooled)

    def _document_masks(self, cu_seqlens, n_tokens: int):
        """Block masks of the packed tokens: each attends within its own sequence; for the
        last layer of ``cls_last``, sequence i's first token (query i) attends to sequence i."""
        from torch.nn.attention.flex_attention import create_block_mask

        n = cu_seqlens.shape[0] - 1
        positions = torch.arange(n_tokens, device=cu_seqlens.device)
        document = torch.searchsorted(cu_seqlens[1:].long(), positions, right=True)

        def same_document(b, h, q_idx, kv_idx):
            return document[q_idx] == document[kv_idx]

        def own_document(b, h, q_idx, kv_idx):
            return q_idx == document[kv_idx]

        device = cu_seqlens.device
        full = create_block_mask(same_document, None, None, n_tokens, n_tokens, device=device)
        if not self.cls_last:
            return {False: full}
        first = create_block_mask(own_document, None, None, n, n_tokens, device=device)
        return {False: full, True: first}

    def _block(self, layer, hidden, cu_seqlens, max_len, lengths, query_rows, attend=None):
        attn = layer.attention
        shape = (-1, self.n_heads, self.head_dim)
        residual = hidden if query_rows is None else hidden[query_rows]
        q = attn.q_lin(residual).view(shape)
        k = attn.k_lin(hidden).view(shape)
        v = attn.v_lin(hidden).view(shape)
        if attend is not None:
            out = attend(q, k, v)
        else:
            out = self._attend(q, k, v, cu_seqlens, max_len, lengths, query_rows is not None)
        hidden = layer.sa_layer_norm(attn.out_lin(out.reshape(q.shape[0], -1)) + residual)
        ffn = layer.ffn
        return layer.output_layer_norm(ffn.lin2(ffn.activation(ffn.lin1(hidden))) + hidden)

    def _attend(self, q, k, v, cu_seqlens, max_len, lengths, one_query):
        n = cu_seqlens.shape[0] - 1
        cu_q = torch.arange(n + 1, dtype=torch.int32, device=q.device) if one_query else cu_seqlens
        if q.is_cuda:
            from torch.nn.attention.varlen import varlen_attn

            return varlen_attn(q, k, v, cu_q, cu_seqlens, 1 if one_query else max_len, max_len)
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


def _flex(q, k, v, block_mask):
    """FlexAttention over packed ``(tokens, heads, dim)`` inputs with a document block mask."""
    from torch.nn.attention.flex_attention import flex_attention

    heads_first = [x.transpose(0, 1).unsqueeze(0).contiguous() for x in (q, k, v)]
    out = flex_attention(*heads_first, block_mask=block_mask)
    return out.squeeze(0).transpose(0, 1)
