// A synthetic attention trace for unit tests only (never reported as model results): random
// token-level keys and queries per head, a few "heavy" tokens whose keys align with a slowly
// drifting per-head query direction, softmax attention computed exactly and pooled as a model
// would. Gives policies temporal structure to find without any model.
#pragma once

#include <algorithm>
#include <cmath>
#include <random>
#include <vector>

#include "predictor/attention_pooling.h"
#include "predictor/trace.h"

namespace foresight::predictor::testing {

struct SyntheticTraceOptions {
  int layers = 2;
  int q_heads = 4;
  int kv_heads = 2;
  int head_dim = 16;
  int64_t prompt_tokens = 600;
  int64_t decode_steps = 40;
  uint64_t seed = 1;
};

inline Trace MakeSyntheticTrace(const SyntheticTraceOptions& o) {
  TraceGeometry g;
  g.layers = o.layers;
  g.q_heads = o.q_heads;
  g.kv_heads = o.kv_heads;
  g.head_dim = o.head_dim;
  g.block_tokens = 16;
  g.prompt_tokens = o.prompt_tokens;
  const int64_t total = o.prompt_tokens + o.decode_steps;
  const int d = o.head_dim, group = o.q_heads / o.kv_heads;
  std::mt19937_64 rng(o.seed);
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  std::vector<Trace::Layer> layers(o.layers);
  for (int l = 0; l < o.layers; ++l) {
    // keys[t][kv][c]
    std::vector<float> keys(total * o.kv_heads * d);
    std::vector<float> dir(o.q_heads * d);
    for (auto& v : dir) v = n(rng);
    for (int64_t t = 0; t < total; ++t) {
      const bool heavy = u(rng) < 0.03f;
      for (int kv = 0; kv < o.kv_heads; ++kv) {
        for (int c = 0; c < d; ++c) {
          float k = n(rng);
          if (heavy) k += 1.5f * dir[(kv * group + (t % group)) * d + c];
          keys[(t * o.kv_heads + kv) * d + c] = k;
        }
      }
    }
    auto query_at = [&](int64_t t, int h, std::vector<float>* q) {
      q->resize(d);
      for (int c = 0; c < d; ++c) {
        // Slow drift: the direction rotates with position.
        const float drift = std::sin(0.01f * t + c);
        (*q)[c] = 1.2f * dir[h * d + c] + 0.3f * drift + 0.5f * n(rng);
      }
    };
    auto attention = [&](const std::vector<float>& q, int kv, int64_t keys_n, std::vector<float>* p) {
      p->resize(keys_n);
      float mx = -INFINITY;
      for (int64_t j = 0; j < keys_n; ++j) {
        float s = 0;
        for (int c = 0; c < d; ++c) s += q[c] * keys[(j * o.kv_heads + kv) * d + c];
        (*p)[j] = s / std::sqrt(float(d));
        mx = std::max(mx, (*p)[j]);
      }
      float sum = 0;
      for (auto& v : *p) sum += (v = std::exp(v - mx));
      for (auto& v : *p) v /= sum;
    };
    Trace::Layer& L = layers[l];
    const int64_t P = o.prompt_tokens, R = g.prefill_rows(), bp = g.prompt_blocks();
    L.prefill_block_max.assign(o.q_heads * R * bp, 0.0f);
    L.prefill_block_sum.assign(o.q_heads * R * bp, 0.0f);
    L.prefill_block_sum_total.assign(o.q_heads * bp, 0.0f);
    std::vector<float> q, p, bmax, bsum;
    for (int h = 0; h < o.q_heads; ++h) {
      for (int64_t i = 0; i < P; ++i) {
        query_at(i, h, &q);
        attention(q, h / group, i + 1, &p);
        const int64_t nb = (i + 16) / 16;
        bmax.assign(nb, 0);
        bsum.assign(nb, 0);
        PoolAttentionRow(p, 16, bmax, bsum);
        for (int64_t b = 0; b < nb; ++b) L.prefill_block_sum_total[h * bp + b] += bsum[b];
        if (i >= P - R) {
          const int64_t r = i - (P - R);
          std::copy(bmax.begin(), bmax.end(), &L.prefill_block_max[(h * R + r) * bp]);
          std::copy(bsum.begin(), bsum.end(), &L.prefill_block_sum[(h * R + r) * bp]);
        }
      }
    }
    const int64_t bmax_n = g.blocks_at(o.decode_steps - 1);
    L.decode_block_max.assign(o.decode_steps * o.q_heads * bmax_n, 0.0f);
    L.decode_block_sum.assign(o.decode_steps * o.q_heads * bmax_n, 0.0f);
    for (int64_t s = 0; s < o.decode_steps; ++s) {
      const int64_t keys_n = g.key_tokens(s), nb = g.blocks_at(s);
      for (int h = 0; h < o.q_heads; ++h) {
        query_at(P + s, h, &q);
        L.decode_query.insert(L.decode_query.end(), q.begin(), q.end());
        attention(q, h / group, keys_n, &p);
        bmax.assign(nb, 0);
        bsum.assign(nb, 0);
        PoolAttentionRow(p, 16, bmax, bsum);
        std::copy(bmax.begin(), bmax.end(), &L.decode_block_max[(s * o.q_heads + h) * bmax_n]);
        std::copy(bsum.begin(), bsum.end(), &L.decode_block_sum[(s * o.q_heads + h) * bmax_n]);
      }
    }
    L.digests = KeyDigests(o.kv_heads, d, 16);
    for (int64_t t = 0; t < total; ++t) {
      L.digests.AppendToken(std::span<const float>(&keys[t * o.kv_heads * d], o.kv_heads * d));
    }
  }
  auto trace = Trace::FromLayers(g, o.decode_steps, std::move(layers), {{"source", "synthetic"}});
  if (!trace.ok()) std::abort();
  return std::move(*trace);
}

}  // namespace foresight::predictor::testing
