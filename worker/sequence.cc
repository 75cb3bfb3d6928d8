#include "worker/sequence.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <limits>

namespace foresight::worker {
namespace {

double Now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

}  // namespace

Sequence::Sequence(const Model& model)
    : c_(model.config()),
      rope_(model.config()),
      kv_(model.config().n_layers, model.config().n_kv_heads, model.config().head_dim) {}

void PrefillAttentionRow(const KvCache& kv, int32_t layer, int32_t kv_head, const float* q, int64_t visible,
                         float* row) {
  const int64_t hd = kv.layout().head_dim(), bt = kv.block_tokens();
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  for (int64_t b = 0; b * bt < visible; ++b) {  // a block's keys are consecutive rows
    const int32_t count = static_cast<int32_t>(std::min<int64_t>(bt, visible - b * bt));
    DotHalfRows(kv.key(layer, kv_head, b * bt), count, hd, q, scale, row + b * bt);
  }
  Softmax(row, visible);
  RoundToHalf(row, visible);
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
  // `fill` writes whole blocks (or fails, and they are dropped below): nothing to zero first.
  kv_.ResizeForOverwrite(tokens);
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

Status Sequence::CheckStep(const ForwardItem& item) const {
  const int64_t p0 = kv_.tokens(), n = item.n;
  if (n <= 0) return InvalidArgument("a forward step needs at least one token");
  if (p0 + n > c_.max_context && c_.max_context > 0) {
    return OutOfRange("sequence of " + std::to_string(p0 + n) + " tokens exceeds the model's context of " +
                      std::to_string(c_.max_context));
  }
  for (int64_t t = 0; t < n; ++t) {
    if (item.tokens[t] < 0 || item.tokens[t] >= c_.vocab_size) {
      return InvalidArgument("token id " + std::to_string(item.tokens[t]) + " is outside the vocabulary of " +
                             std::to_string(c_.vocab_size));
    }
  }
  if (n > 1 || item.observer != nullptr) {  // chunk attention reads every earlier block from the cache
    for (int32_t l = 0; l < c_.n_layers; ++l) {
      for (int64_t b = 0; b < kv_.blocks(); ++b) {
        if (!kv_.resident(l, b)) {
          return FailedPrecondition("prefill needs every earlier KV block on the worker; block " + std::to_string(b) +
                                    " of layer " + std::to_string(l) + " was offloaded");
        }
      }
    }
  }
  return Status::OK();
}

void BatchForward::Run(std::vector<ForwardItem>* items_in) {
  std::vector<ForwardItem>& items = *items_in;
  const ModelConfig& c = model_.config();
  const ModelWeights& w = model_.weights();
  const int64_t d = c.d_model, qo = int64_t{c.n_heads} * c.head_dim, kvo = int64_t{c.n_kv_heads} * c.head_dim;
  const double t0 = Now();
  // The step's rows: item i's tokens are rows [first[i], first[i] + n) at positions p0[i] + t.
  const int64_t m = static_cast<int64_t>(items.size());
  first_.resize(m);
  p0_.resize(m);
  decode_.resize(m);
  std::vector<int64_t>& first = first_;
  std::vector<int64_t>& p0 = p0_;
  std::vector<char>& decode = decode_;
  int64_t n = 0;
  for (int64_t i = 0; i < m; ++i) {
    ForwardItem& it = items[i];
    it.status = it.sequence->CheckStep(it);
    first[i] = n;
    p0[i] = it.sequence->kv_.tokens();
    decode[i] = it.n == 1 && it.observer == nullptr;
    if (!it.status.ok()) continue;
    it.sequence->kv_.Resize(p0[i] + it.n);
    n += it.n;
  }
  row_item_.resize(n);
  row_pos_.resize(n);
  for (int64_t i = 0; i < m; ++i) {
    if (!items[i].status.ok()) continue;
    for (int64_t t = 0; t < items[i].n; ++t) {
      row_item_[first[i] + t] = static_cast<int32_t>(i);
      row_pos_[first[i] + t] = p0[i] + t;
    }
  }
  x_.resize(n * d);
  h_.resize(n * d);
  q_.resize(n * qo);
  k_.resize(n * kvo);
  v_.resize(n * kvo);
  att_.resize(n * qo);
  gate_.resize(n * c.ffn_dim);
  up_.resize(n * c.ffn_dim);
  look_h_.resize(d);
  look_q_.resize(m * qo);  // item i's lookahead queries at i * qo
  looks_.resize(m);
  std::vector<char>& looks = looks_;
  std::vector<int64_t>& decoding = decoding_;  // the layer's decoding items
  for (int64_t r = 0; r < n; ++r) {
    const ForwardItem& it = items[row_item_[r]];
    w.token_embedding.DequantizeRowTo(it.tokens[row_pos_[r] - p0[row_item_[r]]], x_.data() + r * d);
  }

  for (int32_t l = 0; l < c.n_layers; ++l) {
    const LayerWeights& L = w.layers[l];
    for (int64_t r = 0; r < n; ++r) RmsNorm(x_.data() + r * d, L.attn_norm.data(), d, c.rms_eps, h_.data() + r * d);
    for (int64_t i = 0; i < m; ++i) {
      ForwardItem& it = items[i];
      looks[i] =
          it.status.ok() && decode[i] && it.hook != nullptr && l + 1 < c.n_layers && it.hook->WantsLookaheadQueries();
      if (!looks[i]) continue;
      // Layer l + 1's queries from layer l's input (DecodeAttentionHook::WantsLookaheadQueries);
      // the hook hears them with this layer's attention, below.
      const LayerWeights& next = w.layers[l + 1];
      float* look_q = look_q_.data() + i * qo;
      RmsNorm(x_.data() + first[i] * d, next.attn_norm.data(), d, c.rms_eps, look_h_.data());
      next.wq.Multiply(look_h_.data(), 1, look_q, &gemm_);
      if (c.qkv_bias) {
        for (int64_t j = 0; j < qo; ++j) look_q[j] += next.bq[j];
      }
      it.sequence->rope_.Apply(look_q, c.n_heads, p0[i]);
    }
    L.wq.Multiply(h_.data(), n, q_.data(), &gemm_);
    L.wk.Multiply(h_.data(), n, k_.data(), &gemm_);
    L.wv.Multiply(h_.data(), n, v_.data(), &gemm_);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r) {
      if (!items[row_item_[r]].status.ok()) continue;  // failed in an earlier layer: its KV is not written
      Sequence& seq = *items[row_item_[r]].sequence;
      const int64_t pos = row_pos_[r];
      float* qt = q_.data() + r * qo;
      float* kt = k_.data() + r * kvo;
      float* vt = v_.data() + r * kvo;
      if (c.qkv_bias) {
        for (int64_t j = 0; j < qo; ++j) qt[j] += L.bq[j];
        for (int64_t j = 0; j < kvo; ++j) kt[j] += L.bk[j];
        for (int64_t j = 0; j < kvo; ++j) vt[j] += L.bv[j];
      }
      seq.rope_.Apply(qt, c.n_heads, pos);
      RoundToHalf(qt, qo);
      seq.rope_.Apply(kt, c.n_kv_heads, pos);
      for (int32_t h = 0; h < c.n_kv_heads; ++h) {
        FloatToHalfRow(kt + h * c.head_dim, c.head_dim, seq.kv_.key(l, h, pos));
        FloatToHalfRow(vt + h * c.head_dim, c.head_dim, seq.kv_.value(l, h, pos));
      }
    }
    // One sequence's decode attention: its lookahead queries, its hook's selection, the block
    // source, attention.
    auto decode_attention = [&](int64_t i) {
      ForwardItem& it = items[i];
      Sequence& seq = *it.sequence;
      if (looks[i]) it.hook->OnLookaheadQuery(l + 1, p0[i], look_q_.data() + i * qo);
      float* out = att_.data() + first[i] * qo;
      const double ta = Now();
      Status s = seq.DecodeAttention(l, p0[i], q_.data() + first[i] * qo, out, it.hook, it.source);
      seq.stats_.attention_seconds += Now() - ta;
      if (!s.ok()) {  // the step does not happen for this sequence; its row computes on, unused
        it.status = s;
        std::fill(out, out + qo, 0.0f);
      }
    };
    decoding.clear();
    for (int64_t i = 0; i < m; ++i) {
      ForwardItem& it = items[i];
      if (!it.status.ok()) continue;
      if (decode[i]) {
        decoding.push_back(i);
      } else {  // a chunk spreads its heads over the threads
        it.sequence->ChunkAttention(l, it.n, p0[i], q_.data() + first[i] * qo, att_.data() + first[i] * qo,
                                    it.observer);
      }
    }
    // Several decoding sequences: a task each (their hooks, sources and scratch are their own; the
    // nested parallel loops inside run on the task's thread). The predictor's many short loops
    // per layer and sequence would otherwise each wake every thread. One: its heads spread out.
    // No parallel region at all for one: inside even an inactive one (`if` false), the hook's own
    // loops would be nested regions, each with a team of its own, and with OpenMP's default
    // (spinning) wait policy a lone decode ran 14x slower (docs/perf-notes.md).
    const int64_t tasks = static_cast<int64_t>(decoding.size());
    if (tasks == 1) {
      decode_attention(decoding[0]);
    } else if (tasks > 1) {
#pragma omp parallel for schedule(dynamic, 1)
      for (int64_t t = 0; t < tasks; ++t) decode_attention(decoding[t]);
    }
    L.wo.Multiply(att_.data(), n, h_.data(), &gemm_);
    for (int64_t j = 0; j < n * d; ++j) x_[j] += h_[j];

    for (int64_t r = 0; r < n; ++r) RmsNorm(x_.data() + r * d, L.ffn_norm.data(), d, c.rms_eps, h_.data() + r * d);
    L.w_gate.Multiply(h_.data(), n, gate_.data(), &gemm_);
    L.w_up.Multiply(h_.data(), n, up_.data(), &gemm_);
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < n; ++r) SwiGlu(gate_.data() + r * c.ffn_dim, up_.data() + r * c.ffn_dim, c.ffn_dim);
    L.w_down.Multiply(gate_.data(), n, h_.data(), &gemm_);
    for (int64_t j = 0; j < n * d; ++j) x_[j] += h_[j];
  }

  for (int64_t i = 0; i < m; ++i) {
    if (!items[i].status.ok()) items[i].sequence->kv_.Resize(p0[i]);  // (a no-op when CheckStep failed)
  }
  // Logits for the rows that want them, in one product; straight into the item's buffer when one
  // item wants them.
  std::vector<int64_t>& out_rows = out_rows_;  // rows of x_, in order
  std::vector<float*>& out_dest = out_dest_;   // where each row's logits go
  out_rows.clear();
  out_dest.clear();
  for (int64_t i = 0; i < m; ++i) {
    const ForwardItem& it = items[i];
    if (!it.status.ok() || it.logits == nullptr) continue;
    for (int64_t t = it.all_logits ? 0 : it.n - 1; t < it.n; ++t) {
      out_rows.push_back(first[i] + t);
      out_dest.push_back(it.logits + (it.all_logits ? t * c.vocab_size : 0));
    }
  }
  const int64_t rows = static_cast<int64_t>(out_rows.size());
  if (rows > 0) {
    for (int64_t j = 0; j < rows; ++j) {
      RmsNorm(x_.data() + out_rows[j] * d, w.output_norm.data(), d, c.rms_eps, h_.data() + j * d);
    }
    bool contiguous = true;
    for (int64_t j = 1; j < rows; ++j) contiguous = contiguous && out_dest[j] == out_dest[0] + j * c.vocab_size;
    if (contiguous) {
      w.output.Multiply(h_.data(), rows, out_dest[0], &gemm_);
    } else {
      logits_.resize(rows * c.vocab_size);
      w.output.Multiply(h_.data(), rows, logits_.data(), &gemm_);
      for (int64_t j = 0; j < rows; ++j) {
        std::copy_n(logits_.data() + j * c.vocab_size, c.vocab_size, out_dest[j]);
      }
    }
  }
  const double seconds = Now() - t0;
  for (int64_t i = 0; i < m; ++i) {
    const ForwardItem& it = items[i];
    if (!it.status.ok()) continue;
    SequenceStats& st = it.sequence->stats_;
    if (!it.prefill) {
      st.decode_tokens += 1;
      st.decode_seconds += seconds;
    } else {
      st.prefill_tokens += it.n;
      st.prefill_seconds += seconds;
    }
  }
}

void Sequence::ChunkAttention(int32_t layer, int64_t n, int64_t p0, const float* q, float* out,
                              PrefillAttentionObserver* observer) {
  const int64_t hd = c_.head_dim, qo = int64_t{c_.n_heads} * hd, ctx = p0 + n;
  const int32_t group = c_.n_heads / c_.n_kv_heads;
  // llama.cpp's order (worker/transformer_kernels.h): half dot products, then the weighted sum of
  // the half values in 16 lanes by position, folded by SumLanes.
  const int64_t bt = kv_.block_tokens();
  if (bt == kAttentionLanes && !row_at_a_time_) {
    ChunkAttentionTiled(layer, n, p0, q, out, observer);
    return;
  }
  // The observer hears each head's rows in query order, so one thread takes a head's rows.
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
        PrefillAttentionRow(kv_, layer, kvh, q + t * qo + h * hd, visible, row);
        std::fill(row + visible, row + ctx, 0.0f);
        if (observer != nullptr) observer->OnRow(layer, h, p0 + t, row);
        const int64_t nb = (visible + bt - 1) / bt;
        counts.resize(nb);
        values.resize(nb);
        for (int64_t b = 0; b < nb; ++b) {  // a block's values are consecutive rows
          counts[b] = static_cast<int32_t>(std::min<int64_t>(bt, visible - b * bt));
          values[b] = kv_.value(layer, kvh, b * bt);
        }
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

void Sequence::ChunkAttentionTiled(int32_t layer, int64_t n, int64_t p0, const float* q, float* out,
                                   PrefillAttentionObserver* observer) {
  const int64_t hd = c_.head_dim, qo = int64_t{c_.n_heads} * hd, ctx = p0 + n;
  const int32_t group = c_.n_heads / c_.n_kv_heads;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const int64_t bt = kAttentionLanes;
  // A task is one KV head and kTileRows query positions: its group * kTileRows query rows read each
  // key and value row once (worker/transformer_kernels.h: the same bits as one row at a time).
  const int64_t tile = std::max<int64_t>(1, kMaxQueryRows * 4 / group);
  const int64_t tiles = (n + tile - 1) / tile;
  const int64_t rows_max = tile * group;
  const int64_t scratch_floats = rows_max * (ctx + kAttentionLanes * hd);
  const int threads = omp_get_max_threads();
  if (static_cast<int>(tile_scratch_.size()) < threads) tile_scratch_.resize(threads);
  // One tile: scores, softmax, the observer's rows, then the weighted sums of the values.
  auto run_tile = [&](TileScratch& s, int64_t ti, int32_t kvh) {
    const int64_t t0 = ti * tile, tn = std::min(tile, n - t0);
    const int64_t rows = tn * group;
    const int64_t visible_max = p0 + t0 + tn;  // the tile's last row sees this many keys
    const int64_t nb = (visible_max + bt - 1) / bt;
    float* scores = s.floats.data();
    float* lanes = scores + rows * ctx;
    for (int64_t r = 0; r < rows; ++r) {  // row r: position t0 + r / group, head kvh * group + r % group
      const int64_t t = t0 + r / group;
      const int32_t h = kvh * group + static_cast<int32_t>(r % group);
      s.queries[r] = q + t * qo + h * hd;
      s.rows[r] = scores + r * ctx;
      s.lanes[r] = lanes + r * kAttentionLanes * hd;
    }
    for (int64_t b = 0; b < nb; ++b) {
      s.counts[b] = static_cast<int32_t>(std::min<int64_t>(bt, visible_max - b * bt));
      s.values[b] = kv_.value(layer, kvh, b * bt);
      for (int64_t r = 0; r < rows; ++r) s.probs[r] = s.rows[r] + b * bt;
      if (b + 1 < nb) {  // a KV head's blocks are apart in memory: fetch the next one's keys ahead
        const char* next = reinterpret_cast<const char*>(kv_.key(layer, kvh, (b + 1) * bt));
        for (int64_t at = 0; at < bt * hd * 2; at += 64) _mm_prefetch(next + at, _MM_HINT_T0);
      }
      // Keys past a row's position are scored too, then dropped with the row's tail.
      DotHalfRowsQueries(kv_.key(layer, kvh, b * bt), s.counts[b], hd, s.queries.data(), rows, scale, s.probs.data());
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t visible = p0 + t0 + r / group + 1;
      float* row = s.rows[r];
      Softmax(row, visible);
      RoundToHalf(row, visible);
      std::fill(row + visible, row + visible_max, 0.0f);
      // Row r is query head kvh * group + r % group at position t0 + r / group: each head's rows
      // in position order, as the observer wants them.
      if (observer != nullptr)
        observer->OnRow(layer, kvh * group + static_cast<int32_t>(r % group), p0 + t0 + r / group, row);
    }
    std::fill(lanes, lanes + rows * kAttentionLanes * hd, 0.0f);
    // Blocks every row of the tile sees whole, all rows at once; then each row's last blocks.
    const int64_t shared = (p0 + t0 + 1) / bt;
    AccumulateHalfBlocksRows(s.rows.data(), s.lanes.data(), rows, s.values.data(), shared, hd);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t visible = p0 + t0 + r / group + 1;
      const int64_t own = (visible + bt - 1) / bt;
      for (int64_t b = shared; b < own; ++b) {
        s.counts[b] = static_cast<int32_t>(std::min<int64_t>(bt, visible - b * bt));
      }
      AccumulateHalfBlocks(s.rows[r] + shared * bt, s.values.data() + shared, s.counts.data() + shared, own - shared,
                           hd, s.lanes[r]);
      const int64_t t = t0 + r / group;
      const int32_t h = kvh * group + static_cast<int32_t>(r % group);
      SumLanes(s.lanes[r], hd, out + t * qo + h * hd);
    }
  };
#pragma omp parallel
  {
    TileScratch& s = tile_scratch_[omp_get_thread_num()];
    if (static_cast<int64_t>(s.floats.size()) < scratch_floats) s.floats.resize(scratch_floats);
    const int64_t nb_ctx = (ctx + bt - 1) / bt;
    s.counts.resize(nb_ctx);
    s.values.resize(nb_ctx);
    s.queries.resize(rows_max);
    s.rows.resize(rows_max);
    s.lanes.resize(rows_max);
    s.probs.resize(rows_max);
    if (observer == nullptr) {
      // Heavier tiles (later positions see more keys) first.
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < tiles * c_.n_kv_heads; ++task) {
        run_tile(s, tiles - 1 - task / c_.n_kv_heads, static_cast<int32_t>(task % c_.n_kv_heads));
      }
    } else {
      // The observer hears each query head's rows in position order from one thread: a task is a
      // KV head's tiles, in order (fewer tasks to share out, so a little less even).
#pragma omp for schedule(dynamic, 1)
      for (int32_t kvh = 0; kvh < c_.n_kv_heads; ++kvh) {
        for (int64_t ti = 0; ti < tiles; ++ti) run_tile(s, ti, kvh);
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
