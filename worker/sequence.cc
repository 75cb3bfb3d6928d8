#include "worker/sequence.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace foresight::worker {
namespace {

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

Sequence::Sequence(const Model& model, int32_t prefill_chunk)
    : model_(model),
      c_(model.config()),
      chunk_(std::max(1, prefill_chunk)),
      rope_(model.config()),
      kv_(model.config().n_layers, model.config().n_kv_heads, model.config().head_dim) {}

Status ForEachPrefillChunk(const std::vector<TokenId>& tokens, int32_t chunk, int64_t vocab, std::vector<float>* logits,
                           bool all_logits, const std::function<Status(const TokenId*, int64_t, float*)>& forward) {
  if (logits != nullptr) logits->assign(all_logits ? tokens.size() * vocab : vocab, 0.0f);
  for (size_t at = 0; at < tokens.size(); at += chunk) {
    const int64_t n = std::min<int64_t>(chunk, tokens.size() - at);
    const bool last = at + n == tokens.size();
    float* out = nullptr;
    if (logits != nullptr && all_logits) out = logits->data() + at * vocab;
    if (logits != nullptr && !all_logits && last) out = logits->data();
    FS_RETURN_IF_ERROR(forward(tokens.data() + at, n, out));
  }
  return Status::OK();
}

Status Sequence::Prefill(const std::vector<TokenId>& tokens, std::vector<float>* logits, bool all_logits,
                         PrefillAttentionObserver* observer) {
  if (tokens.empty()) return InvalidArgument("prefill needs at least one token");
  const double t0 = Now();
  FS_RETURN_IF_ERROR(ForEachPrefillChunk(tokens, chunk_, c_.vocab_size, logits, all_logits,
                                         [&](const TokenId* chunk, int64_t n, float* out) {
                                           return Forward(chunk, n, out, all_logits, nullptr, observer);
                                         }));
  stats_.prefill_tokens += tokens.size();
  stats_.prefill_seconds += Now() - t0;
  return Status::OK();
}

void Sequence::TEST_FillRandomKv(int64_t tokens, uint32_t seed) {
  kv_.Resize(tokens);
#pragma omp parallel for schedule(static)
  for (int64_t p = 0; p < tokens; ++p) {
    uint32_t state = seed ^ static_cast<uint32_t>(p * 2654435761u);
    std::vector<float> row(c_.head_dim);
    for (int32_t l = 0; l < c_.n_layers; ++l) {
      for (int32_t h = 0; h < c_.n_kv_heads; ++h) {
        for (int pass = 0; pass < 2; ++pass) {
          for (float& v : row) {
            state = state * 1664525u + 1013904223u;
            v = static_cast<float>(static_cast<int32_t>(state >> 8) % 2001 - 1000) * 1e-3f;
          }
          FloatToHalfRow(row.data(), c_.head_dim, pass == 0 ? kv_.key(l, h, p) : kv_.value(l, h, p));
        }
      }
    }
  }
}

Status Sequence::ImportKv(int64_t n_blocks, const std::function<Status(int32_t, const std::vector<uint8_t*>&)>& fill) {
  if (kv_.tokens() != 0) {
    return FailedPrecondition("importing KV needs an empty sequence; this one holds " + std::to_string(kv_.tokens()) +
                              " tokens");
  }
  const int64_t tokens = n_blocks * kv_.block_tokens();
  if (n_blocks < 0 || (c_.max_context > 0 && tokens > c_.max_context)) {
    return OutOfRange("importing " + std::to_string(n_blocks) + " blocks exceeds the model's context of " +
                      std::to_string(c_.max_context));
  }
  kv_.Resize(tokens);
  std::vector<uint8_t*> dests(n_blocks);
  for (int32_t l = 0; l < c_.n_layers; ++l) {
    for (int64_t b = 0; b < n_blocks; ++b) dests[b] = kv_.mutable_block_data(l, b);
    Status s = fill(l, dests);
    if (!s.ok()) {
      kv_.Resize(0);
      return s;
    }
  }
  return Status::OK();
}

Status Sequence::Decode(TokenId token, std::vector<float>* logits, DecodeAttentionHook* hook, KvBlockSource* source) {
  const double t0 = Now();
  if (logits != nullptr) logits->assign(c_.vocab_size, 0.0f);
  FS_RETURN_IF_ERROR(Forward(&token, 1, logits != nullptr ? logits->data() : nullptr, false, hook, nullptr, source));
  stats_.decode_tokens += 1;
  stats_.decode_seconds += Now() - t0;
  return Status::OK();
}

Status Sequence::Forward(const TokenId* tokens, int64_t n, float* logits, bool all_logits, DecodeAttentionHook* hook,
                         PrefillAttentionObserver* observer, KvBlockSource* source) {
  const ModelWeights& w = model_.weights();
  const int64_t d = c_.d_model, qo = int64_t{c_.n_heads} * c_.head_dim, kvo = int64_t{c_.n_kv_heads} * c_.head_dim;
  const int64_t p0 = kv_.tokens();
  if (p0 + n > c_.max_context && c_.max_context > 0) {
    return OutOfRange("sequence of " + std::to_string(p0 + n) + " tokens exceeds the model's context of " +
                      std::to_string(c_.max_context));
  }
  for (int64_t t = 0; t < n; ++t) {
    if (tokens[t] < 0 || tokens[t] >= c_.vocab_size) {
      return InvalidArgument("token id " + std::to_string(tokens[t]) + " is outside the vocabulary of " +
                             std::to_string(c_.vocab_size));
    }
  }
  if (n > 1 || observer != nullptr) {  // chunk attention reads every earlier block from the cache
    for (int32_t l = 0; l < c_.n_layers; ++l) {
      for (int64_t b = 0; b < kv_.blocks(); ++b) {
        if (!kv_.resident(l, b)) {
          return FailedPrecondition("prefill needs every earlier KV block on the worker; block " + std::to_string(b) +
                                    " of layer " + std::to_string(l) + " was offloaded");
        }
      }
    }
  }
  kv_.Resize(p0 + n);
  x_.resize(n * d);
  h_.resize(n * d);
  q_.resize(n * qo);
  k_.resize(n * kvo);
  v_.resize(n * kvo);
  att_.resize(n * qo);
  gate_.resize(n * c_.ffn_dim);
  up_.resize(n * c_.ffn_dim);
  for (int64_t t = 0; t < n; ++t) w.token_embedding.DequantizeRowTo(tokens[t], x_.data() + t * d);

  for (int32_t l = 0; l < c_.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    for (int64_t t = 0; t < n; ++t) RmsNorm(x_.data() + t * d, L.attn_norm.data(), d, c_.rms_eps, h_.data() + t * d);
    if (n == 1 && observer == nullptr && hook != nullptr && l + 1 < c_.n_layers && hook->WantsLookaheadQueries()) {
      // Layer l + 1's queries from layer l's input (DecodeAttentionHook::WantsLookaheadQueries).
      const LayerWeights& next = w.layers[l + 1];
      look_h_.resize(d);
      look_q_.resize(qo);
      RmsNorm(x_.data(), next.attn_norm.data(), d, c_.rms_eps, look_h_.data());
      next.wq.Multiply(look_h_.data(), 1, look_q_.data(), &gemm_);
      if (c_.qkv_bias) {
        for (int64_t i = 0; i < qo; ++i) look_q_[i] += next.bq[i];
      }
      rope_.Apply(look_q_.data(), c_.n_heads, p0);
      hook->OnLookaheadQuery(l + 1, p0, look_q_.data());
    }
    L.wq.Multiply(h_.data(), n, q_.data(), &gemm_);
    L.wk.Multiply(h_.data(), n, k_.data(), &gemm_);
    L.wv.Multiply(h_.data(), n, v_.data(), &gemm_);
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; ++t) {
      float* qt = q_.data() + t * qo;
      float* kt = k_.data() + t * kvo;
      float* vt = v_.data() + t * kvo;
      if (c_.qkv_bias) {
        for (int64_t i = 0; i < qo; ++i) qt[i] += L.bq[i];
        for (int64_t i = 0; i < kvo; ++i) kt[i] += L.bk[i];
        for (int64_t i = 0; i < kvo; ++i) vt[i] += L.bv[i];
      }
      rope_.Apply(qt, c_.n_heads, p0 + t);
      RoundToHalf(qt, qo);
      rope_.Apply(kt, c_.n_kv_heads, p0 + t);
      for (int32_t h = 0; h < c_.n_kv_heads; ++h) {
        FloatToHalfRow(kt + h * c_.head_dim, c_.head_dim, kv_.key(l, h, p0 + t));
        FloatToHalfRow(vt + h * c_.head_dim, c_.head_dim, kv_.value(l, h, p0 + t));
      }
    }
    if (n == 1 && observer == nullptr) {
      const double ta = Now();
      Status s = DecodeAttention(l, p0, q_.data(), att_.data(), hook, source);
      stats_.attention_seconds += Now() - ta;
      if (!s.ok()) {
        kv_.Resize(p0);  // the step did not happen
        return s;
      }
    } else {
      ChunkAttention(l, n, p0, q_.data(), att_.data(), observer);
    }
    L.wo.Multiply(att_.data(), n, h_.data(), &gemm_);
    for (int64_t i = 0; i < n * d; ++i) x_[i] += h_[i];

    for (int64_t t = 0; t < n; ++t) RmsNorm(x_.data() + t * d, L.ffn_norm.data(), d, c_.rms_eps, h_.data() + t * d);
    L.w_gate.Multiply(h_.data(), n, gate_.data(), &gemm_);
    L.w_up.Multiply(h_.data(), n, up_.data(), &gemm_);
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < n; ++t) SwiGlu(gate_.data() + t * c_.ffn_dim, up_.data() + t * c_.ffn_dim, c_.ffn_dim);
    L.w_down.Multiply(gate_.data(), n, h_.data(), &gemm_);
    for (int64_t i = 0; i < n * d; ++i) x_[i] += h_[i];
  }

  if (logits == nullptr) return Status::OK();
  const int64_t first = all_logits ? 0 : n - 1;
  const int64_t rows = n - first;
  for (int64_t t = first; t < n; ++t)
    RmsNorm(x_.data() + t * d, w.output_norm.data(), d, c_.rms_eps, h_.data() + (t - first) * d);
  w.output.Multiply(h_.data(), rows, logits, &gemm_);
  return Status::OK();
}

void Sequence::ChunkAttention(int32_t layer, int64_t n, int64_t p0, const float* q, float* out,
                              PrefillAttentionObserver* observer) {
  const int64_t hd = c_.head_dim, qo = int64_t{c_.n_heads} * hd, ctx = p0 + n;
  const int32_t group = c_.n_heads / c_.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  // llama.cpp's order (worker/transformer_kernels.h): half dot products, then the weighted sum of
  // the half values in 16 lanes by position, folded by SumLanes.
  const int64_t bt = kv_.block_tokens();
#pragma omp parallel
  {
    std::vector<float> scores(static_cast<size_t>(n * ctx));
    std::vector<float> lanes(static_cast<size_t>(kAttentionLanes * hd));
    std::vector<int32_t> counts;
    std::vector<const uint16_t*> values;
#pragma omp for schedule(dynamic, 1)
    for (int32_t h = 0; h < c_.n_heads; ++h) {
      const int32_t kvh = h / group;
      for (int64_t t = 0; t < n; ++t) {
        float* row = scores.data() + t * ctx;
        const int64_t visible = p0 + t + 1;
        const float* qt = q + t * qo + h * hd;
        const int64_t nb = (visible + bt - 1) / bt;
        counts.resize(nb);
        values.resize(nb);
        for (int64_t b = 0; b < nb; ++b) {  // a block's keys (and values) are consecutive rows
          counts[b] = static_cast<int32_t>(std::min<int64_t>(bt, visible - b * bt));
          values[b] = kv_.value(layer, kvh, b * bt);
          DotHalfRows(kv_.key(layer, kvh, b * bt), counts[b], hd, qt, scale, row + b * bt);
        }
        Softmax(row, visible);
        RoundToHalf(row, visible);
        std::fill(row + visible, row + ctx, 0.0f);
        if (observer != nullptr) observer->OnRow(layer, h, p0 + t, row);
        std::fill(lanes.begin(), lanes.end(), 0.0f);
        if (bt == kAttentionLanes) {
          AccumulateHalfBlocks(row, values.data(), counts.data(), nb, hd, lanes.data());
        } else {
          for (int64_t p = 0; p < visible; ++p) {
            AxpyHalf(row[p], kv_.value(layer, kvh, p), lanes.data() + (p % kAttentionLanes) * hd, hd);
          }
        }
        SumLanes(lanes.data(), hd, out + t * qo + h * hd);
      }
    }
  }
}

Status Sequence::DecodeAttention(int32_t layer, int64_t pos, const float* q, float* out, DecodeAttentionHook* hook,
                                 KvBlockSource* source) {
  const int64_t hd = c_.head_dim, ctx = pos + 1, bt = kv_.block_tokens();
  const int64_t n_blocks = kv_.blocks();
  const int32_t group = c_.n_heads / c_.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  bool sparse = false;
  if (hook != nullptr) {
    selected_.assign(c_.n_kv_heads, {});
    sparse = hook->SelectBlocks(layer, pos, q, kv_, &selected_);
  }
  if (!sparse) {
    selected_.assign(c_.n_kv_heads, {});
    for (auto& s : selected_) {
      s.resize(n_blocks);
      for (int64_t b = 0; b < n_blocks; ++b) s[b] = static_cast<int32_t>(b);
    }
  }
  heads_.resize(c_.n_kv_heads);
  for (int32_t kvh = 0; kvh < c_.n_kv_heads; ++kvh) heads_[kvh].assign(selected_[kvh].size(), nullptr);
  if (source != nullptr) FS_RETURN_IF_ERROR(source->AcquireLayer(layer, pos, selected_, &heads_));
  const BlockLayout& layout = kv_.layout();
  for (int32_t kvh = 0; kvh < c_.n_kv_heads; ++kvh) {
    for (size_t i = 0; i < selected_[kvh].size(); ++i) {
      if (heads_[kvh][i] != nullptr) continue;
      const int32_t b = selected_[kvh][i];
      const uint8_t* block = kv_.block_data(layer, b);
      if (block == nullptr) {
        if (source != nullptr) source->ReleaseLayer(layer, pos);
        return Internal("layer " + std::to_string(layer) + " block " + std::to_string(b) +
                        " is neither in the KV cache nor supplied by the block source");
      }
      heads_[kvh][i] = reinterpret_cast<const uint16_t*>(block + layout.head_range(kvh).offset);
    }
  }
  for (const auto& s : selected_) stats_.blocks_attended += static_cast<int64_t>(s.size());
  stats_.blocks_total += n_blocks * c_.n_kv_heads;
  pooled_.assign(c_.n_heads * n_blocks, 0.0f);
  pooled_sum_.assign(c_.n_heads * n_blocks, 0.0f);
  scores_.resize(static_cast<size_t>(c_.n_heads) * ctx);
  lanes_.resize(c_.n_heads);
  counts_.resize(c_.n_heads);
  values_.resize(c_.n_heads);
#pragma omp parallel for schedule(dynamic, 1)
  for (int32_t h = 0; h < c_.n_heads; ++h) {
    const int32_t kvh = h / group;
    const std::vector<int32_t>& blocks = selected_[kvh];
    const std::vector<const uint16_t*>& heads = heads_[kvh];
    const float* qh = q + h * hd;
    float* sc = scores_.data() + static_cast<int64_t>(h) * ctx;
    // Scores and the weighted value sum by block, in llama.cpp's order (worker/transformer_kernels.h).
    std::vector<int32_t>& counts = counts_[h];
    std::vector<const uint16_t*>& values = values_[h];
    counts.resize(blocks.size());
    values.resize(blocks.size());
    int64_t m = 0;
    for (size_t i = 0; i < blocks.size(); ++i) {
      const int32_t b = blocks[i];
      counts[i] = static_cast<int32_t>(std::min<int64_t>((b + 1) * bt, ctx) - b * bt);
      values[i] = heads[i] + bt * hd;  // K[bt][hd] then V[bt][hd]
      DotHalfRows(heads[i], counts[i], hd, qh, scale, sc + m);
      m += counts[i];
    }
    Softmax(sc, m);
    RoundToHalf(sc, m);
    float* oh = out + h * hd;
    float* pooled = pooled_.data() + h * n_blocks;
    float* pooled_sum = pooled_sum_.data() + h * n_blocks;
    m = 0;
    for (size_t i = 0; i < blocks.size(); ++i) {
      float mx = 0, sum = 0;
      for (int32_t j = 0; j < counts[i]; ++j) {
        mx = std::max(mx, sc[m + j]);
        sum += sc[m + j];
      }
      m += counts[i];
      pooled[blocks[i]] = mx;
      pooled_sum[blocks[i]] = sum;
    }
    std::vector<float>& lanes = lanes_[h];
    lanes.assign(static_cast<size_t>(kAttentionLanes * hd), 0.0f);
    if (bt == kAttentionLanes) {
      AccumulateHalfBlocks(sc, values.data(), counts.data(), static_cast<int64_t>(blocks.size()), hd, lanes.data());
    } else {
      m = 0;
      for (size_t i = 0; i < blocks.size(); ++i) {
        for (int32_t j = 0; j < counts[i]; ++j, ++m) {
          AxpyHalf(sc[m], values[i] + j * hd, lanes.data() + ((blocks[i] * bt + j) % kAttentionLanes) * hd, hd);
        }
      }
    }
    SumLanes(lanes.data(), hd, oh);
  }
  if (hook != nullptr) hook->OnAttention(layer, pos, q, !sparse, pooled_.data(), pooled_sum_.data(), n_blocks);
  if (source != nullptr) source->ReleaseLayer(layer, pos);
  return Status::OK();
}

}  // namespace foresight::worker
