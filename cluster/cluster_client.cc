#include "cluster/cluster_client.h"

#include <algorithm>
#include <condition_variable>
#include <future>
#include <map>
#include <set>
#include <thread>
#include <type_traits>
#include <unordered_map>

#include <xxhash.h>
#include <nlohmann/json.hpp>

#include "cluster/etcd_client.h"
#include "common/json_fields.h"
#include "common/mutex.h"

namespace foresight {

uint64_t RendezvousWeight(const BlockKey& key, const std::string& node_id) {
  const uint64_t seed = XXH3_64bits(node_id.data(), node_id.size());
  return XXH3_64bits_withSeed(key.data(), BlockKey::kSize, seed);
}

std::vector<size_t> RendezvousOrder(const BlockKey& key, const std::vector<std::string>& node_ids) {
  std::vector<std::pair<uint64_t, size_t>> w;
  w.reserve(node_ids.size());
  for (size_t i = 0; i < node_ids.size(); ++i) w.push_back({RendezvousWeight(key, node_ids[i]), i});
  // Ties (astronomically rare) break by id so that every client agrees.
  std::sort(w.begin(), w.end(), [&](const auto& a, const auto& b) {
    return a.first != b.first ? a.first > b.first : node_ids[a.second] < node_ids[b.second];
  });
  std::vector<size_t> order;
  order.reserve(w.size());
  for (const auto& [weight, i] : w) order.push_back(i);
  return order;
}

namespace {

using Clock = std::chrono::steady_clock;

bool IsNodeFailure(const Status& s) {
  return s.code() == StatusCode::kUnavailable || s.code() == StatusCode::kDeadlineExceeded ||
         s.code() == StatusCode::kInternal || s.code() == StatusCode::kAborted;
}

}  // namespace

class ClusterClient::Impl {
 public:
  struct Node {
    ClusterMember member;
    Mutex mu;
    std::shared_ptr<CacheClient> client FS_GUARDED_BY(mu);
    Clock::time_point retry_connect_after FS_GUARDED_BY(mu){};
    std::atomic<int64_t> suspect_until{0};  // steady_clock ticks
  };
  struct View {
    std::vector<std::shared_ptr<Node>> nodes;
    std::vector<std::string> ids;
  };

  explicit Impl(ClusterClientOptions options) : options_(std::move(options)), view_(std::make_shared<View>()) {}

  ~Impl() {
    {
      MutexLock lock(mu_);
      stopping_ = true;
    }
    abandon_repair_ = true;
    cv_.SignalAll();
    if (refresher_.joinable()) refresher_.join();
    if (repairer_.joinable()) repairer_.join();
  }

  void StartThreads() {
    refresher_ = std::thread([this] { RefreshLoop(); });
    if (options_.background_repair) repairer_ = std::thread([this] { RepairLoop(); });
  }

  std::shared_ptr<const View> Snapshot() const {
    MutexLock lock(mu_);
    return view_;
  }

  Status RefreshMembership() {
    auto range = etcd_->RangePrefix(options_.prefix);
    if (!range.ok()) {
      MutexLock lock(mu_);
      ++stats_.etcd_errors;
      stats_.etcd_reachable = false;
      return range.status().WithContext("reading the member list (keeping the last known one)");
    }
    std::vector<ClusterMember> members;
    for (const auto& kv : range->kvs) {
      auto m = ParseClusterMember(kv.value);
      if (m.ok()) members.push_back(std::move(*m));
    }
    std::sort(members.begin(), members.end(), [](const auto& a, const auto& b) { return a.node_id < b.node_id; });
    MutexLock lock(mu_);
    stats_.etcd_reachable = true;
    bool same = members.size() == view_->nodes.size();
    for (size_t i = 0; same && i < members.size(); ++i) {
      const auto& old = view_->nodes[i]->member;
      same =
          old.node_id == members[i].node_id && old.grpc == members[i].grpc && old.incarnation == members[i].incarnation;
    }
    if (same) return Status::OK();
    auto next = std::make_shared<View>();
    for (auto& m : members) {
      std::shared_ptr<Node> node;
      for (const auto& old : view_->nodes)
        if (old->member.node_id == m.node_id && old->member.grpc == m.grpc && old->member.incarnation == m.incarnation)
          node = old;
      if (!node) {
        node = std::make_shared<Node>();
        node->member = m;
      }
      next->ids.push_back(m.node_id);
      next->nodes.push_back(std::move(node));
    }
    view_ = std::move(next);
    ++stats_.membership_changes;
    repair_pending_ = true;
    cv_.SignalAll();
    return Status::OK();
  }

  StatusOr<std::shared_ptr<CacheClient>> ClientOf(Node& node) {
    MutexLock lock(node.mu);
    if (node.client) return node.client;
    if (Clock::now() < node.retry_connect_after)
      return Unavailable("node " + node.member.node_id + " (" + node.member.grpc +
                         ") failed recently; not retrying yet");
    CacheClientOptions o = options_.node;
    o.address = node.member.grpc;
    auto c = CacheClient::Connect(o);
    if (!c.ok()) {
      node.retry_connect_after = Clock::now() + options_.suspect_for / 2;
      return c.status().WithContext("node " + node.member.node_id);
    }
    {
      MutexLock b(buffers_mu_);
      for (const auto& [data, size] : buffers_) {
        Status s = (*c)->RegisterBuffer(data, size);
        if (!s.ok()) return s.WithContext("registering a buffer with node " + node.member.node_id);
      }
    }
    node.client = std::move(*c);
    return node.client;
  }

  void MarkFailed(Node& node, const Status& s) {
    if (!IsNodeFailure(s)) return;
    node.suspect_until = (Clock::now() + options_.suspect_for).time_since_epoch().count();
    MutexLock lock(node.mu);
    node.client.reset();  // reconnect from scratch next time
    node.retry_connect_after = Clock::now() + options_.suspect_for / 4;
  }

  // The key's node order: rendezvous order, nodes that failed recently moved to the back.
  std::vector<size_t> OrderFor(const View& view, const BlockKey& key) const {
    std::vector<size_t> order = RendezvousOrder(key, view.ids);
    const int64_t now = Clock::now().time_since_epoch().count();
    std::stable_partition(order.begin(), order.end(),
                          [&](size_t i) { return view.nodes[i]->suspect_until.load() <= now; });
    return order;
  }

  Status PutBatch(std::span<BlockPut> items) {
    auto view = Snapshot();
    const size_t n = view->nodes.size();
    const int r = options_.replication;
    {
      MutexLock lock(mu_);
      stats_.puts += items.size();
    }
    if (n < static_cast<size_t>(r)) {
      Status s = Unavailable("the cluster lists " + std::to_string(n) + " node(s) but replication is " +
                             std::to_string(r) + "; cannot acknowledge puts");
      for (auto& it : items) it.status = s;
      MutexLock lock(mu_);
      stats_.failed_puts += items.size();
      return s;
    }
    struct State {
      std::vector<size_t> order;
      size_t next = 0;
      int acks = 0;
      bool failed_over = false;
      std::string errors;
    };
    std::vector<State> state(items.size());
    std::vector<size_t> pending;
    for (size_t i = 0; i < items.size(); ++i) {
      state[i].order = OrderFor(*view, items[i].key);
      pending.push_back(i);
    }
    while (!pending.empty()) {
      // One round: every pending item goes to as many further nodes as it still needs acks from.
      std::map<size_t, std::vector<size_t>> by_node;  // node index -> item indices
      std::vector<size_t> still;
      for (size_t i : pending) {
        State& st = state[i];
        const int need = r - st.acks;
        if (st.next + need > n) {
          items[i].status = Unavailable("block " + items[i].key.ToHex() + " committed on " + std::to_string(st.acks) +
                                        " of " + std::to_string(r) + " replicas; every node tried: " + st.errors);
          continue;
        }
        for (int k = 0; k < need; ++k) by_node[st.order[st.next++]].push_back(i);
        still.push_back(i);
      }
      if (still.empty()) break;
      RunOnNodes<BlockPut>(
          *view, by_node, items, [](CacheClient& c, std::span<BlockPut> sub) { return c.PutBatchAsync(sub); },
          [&](size_t i, const BlockPut& result, const Node& node) {
            if (result.status.ok()) {
              ++state[i].acks;
            } else {
              state[i].failed_over = true;
              state[i].errors += " " + node.member.node_id + ": " + result.status.message() + ";";
            }
          });
      pending.clear();
      for (size_t i : still) {
        if (state[i].acks >= r)
          items[i].status = Status::OK();
        else
          pending.push_back(i);
      }
    }
    Status first;
    uint64_t failed = 0, failovers = 0;
    for (size_t i = 0; i < items.size(); ++i) {
      if (state[i].failed_over) ++failovers;
      if (!items[i].status.ok()) {
        ++failed;
        if (first.ok()) first = items[i].status;
      }
    }
    MutexLock lock(mu_);
    stats_.failed_puts += failed;
    stats_.put_failovers += failovers;
    return first;
  }

  Status GetBatch(std::span<BlockGet> items) {
    auto view = Snapshot();
    const size_t n = view->nodes.size();
    const size_t limit = std::min(n, static_cast<size_t>(options_.replication + options_.extra_probes));
    {
      MutexLock lock(mu_);
      stats_.gets += items.size();
    }
    struct State {
      std::vector<size_t> order;
      size_t next = 0;
      bool only_not_found = true;
      std::string errors;
    };
    std::vector<State> state(items.size());
    std::vector<size_t> pending;
    for (size_t i = 0; i < items.size(); ++i) {
      state[i].order = OrderFor(*view, items[i].key);
      pending.push_back(i);
    }
    uint64_t failovers = 0;
    while (!pending.empty()) {
      std::map<size_t, std::vector<size_t>> by_node;
      std::vector<size_t> still;
      for (size_t i : pending) {
        State& st = state[i];
        if (st.next >= limit) {
          const std::string text = "block " + items[i].key.ToHex() + " on none of its " + std::to_string(limit) +
                                   " candidate node(s):" + st.errors;
          items[i].status = st.only_not_found ? NotFound(text) : Unavailable(text);
          continue;
        }
        if (st.next == 1) ++failovers;  // an item counts once, however many nodes it goes on to
        by_node[st.order[st.next++]].push_back(i);
        still.push_back(i);
      }
      if (still.empty()) break;
      RunOnNodes<BlockGet>(
          *view, by_node, items, [](CacheClient& c, std::span<BlockGet> sub) { return c.GetBatchAsync(sub); },
          [&](size_t i, const BlockGet& result, const Node& node) {
            items[i].bytes = result.bytes;
            items[i].status = result.status;
            if (!result.status.ok()) {
              if (result.status.code() != StatusCode::kNotFound) state[i].only_not_found = false;
              state[i].errors += " " + node.member.node_id + ": " + result.status.message() + ";";
            }
          });
      pending.clear();
      for (size_t i : still)
        if (!items[i].status.ok()) pending.push_back(i);
    }
    Status first;
    uint64_t failed = 0;
    for (auto& it : items) {
      if (!it.status.ok()) {
        if (it.status.code() != StatusCode::kNotFound) ++failed;
        if (first.ok()) first = it.status;
      }
    }
    MutexLock lock(mu_);
    stats_.failed_gets += failed;
    stats_.get_failovers += failovers;
    return first;
  }

  // Sends each node its items (copies, so that replicas do not share status fields) in
  // parallel and reports every result through `done(item index, result, node)`.
  template <typename Item, typename Send, typename Done>
  void RunOnNodes(const View& view, const std::map<size_t, std::vector<size_t>>& by_node, std::span<Item> items,
                  Send send, Done done) {
    struct Call {
      size_t node;
      std::vector<size_t> index;
      std::vector<Item> sub;
      std::shared_ptr<CacheClient> client;
      std::future<Status> future;
      Status error;
    };
    std::vector<Call> calls;
    calls.reserve(by_node.size());
    for (const auto& [node, idx] : by_node) {
      Call c;
      c.node = node;
      c.index = idx;
      for (size_t i : idx) {
        c.sub.push_back(items[i]);
        c.sub.back().status = Status::OK();
      }
      calls.push_back(std::move(c));
    }
    for (Call& c : calls) {
      auto client = ClientOf(*view.nodes[c.node]);
      if (!client.ok()) {
        c.error = client.status();
        continue;
      }
      c.client = *client;
      c.future = send(*c.client, std::span<Item>(c.sub));
    }
    for (Call& c : calls) {
      Node& node = *view.nodes[c.node];
      if (c.future.valid()) c.future.wait();
      bool node_failed = !c.error.ok();
      for (size_t k = 0; k < c.index.size(); ++k) {
        if (!c.error.ok()) c.sub[k].status = c.error;
        if (IsNodeFailure(c.sub[k].status)) node_failed = true;
        done(c.index[k], c.sub[k], node);
      }
      if (node_failed) MarkFailed(node, c.error.ok() ? Unavailable("request failed") : c.error);
    }
  }

  std::vector<std::string> Owners(const BlockKey& key) const {
    auto view = Snapshot();
    std::vector<std::string> out;
    for (size_t i : RendezvousOrder(key, view->ids)) {
      if (out.size() >= static_cast<size_t>(options_.replication)) break;
      out.push_back(view->ids[i]);
    }
    return out;
  }

  Status RepairOnce() {
    auto view = Snapshot();
    const size_t n = view->nodes.size();
    struct Holding {
      uint64_t size = 0;
      std::vector<size_t> holders;
    };
    std::unordered_map<BlockKey, Holding, BlockKeyHash> blocks;
    std::string errors;
    for (size_t i = 0; i < n; ++i) {
      auto client = ClientOf(*view->nodes[i]);
      if (!client.ok()) {
        errors += " " + client.status().message() + ";";
        continue;
      }
      auto list = (*client)->List(100000);
      if (!list.ok()) {
        MarkFailed(*view->nodes[i], list.status());
        errors += " listing " + view->ids[i] + ": " + list.status().message() + ";";
        continue;
      }
      for (const auto& b : *list) {
        auto& h = blocks[b.key];
        h.size = b.size;
        h.holders.push_back(i);
      }
    }
    uint64_t copied = 0, copy_errors = 0;
    std::vector<uint8_t> buffer;
    for (const auto& [key, h] : blocks) {
      if (abandon_repair_) return Aborted("repair pass abandoned: the client is closing");
      const auto order = RendezvousOrder(key, view->ids);
      for (size_t k = 0; k < std::min<size_t>(options_.replication, order.size()); ++k) {
        const size_t owner = order[k];
        if (std::find(h.holders.begin(), h.holders.end(), owner) != h.holders.end()) continue;
        Status s = CopyBlock(*view, key, h.size, h.holders, owner, buffer);
        if (s.ok()) {
          ++copied;
        } else {
          ++copy_errors;
          if (copy_errors <= 3) errors += " " + s.message() + ";";
        }
      }
    }
    MutexLock lock(mu_);
    repair_.passes++;
    repair_.blocks_scanned = blocks.size();
    repair_.blocks_copied += copied;
    repair_.copy_errors += copy_errors;
    repair_.last_error = errors;
    if (!errors.empty()) return Unavailable("repair pass incomplete:" + errors);
    return Status::OK();
  }

  Status CopyBlock(const View& view, const BlockKey& key, uint64_t size, const std::vector<size_t>& holders,
                   size_t owner, std::vector<uint8_t>& buffer) {
    buffer.resize(size);
    Status last = NotFound("block " + key.ToHex() + " has no reachable holder");
    for (size_t h : holders) {
      auto src = ClientOf(*view.nodes[h]);
      if (!src.ok()) continue;
      auto got = (*src)->Get(key, buffer.data(), buffer.size());
      if (!got.ok()) {
        last = got.status().WithContext("repair reading from " + view.ids[h]);
        continue;
      }
      auto dst = ClientOf(*view.nodes[owner]);
      if (!dst.ok()) return dst.status();
      Status s = (*dst)->Put(key, buffer.data(), *got);
      if (!s.ok()) MarkFailed(*view.nodes[owner], s);
      return s.ok() ? s : s.WithContext("repair writing block " + key.ToHex() + " to " + view.ids[owner]);
    }
    return last;
  }

  void RefreshLoop() {
    mu_.Lock();
    while (!stopping_) {
      cv_.WaitFor(mu_, options_.refresh_interval, [&]() FS_REQUIRES(mu_) { return stopping_; });
      if (stopping_) break;
      mu_.Unlock();
      (void)RefreshMembership();
      mu_.Lock();
    }
    mu_.Unlock();
  }

  void RepairLoop() {
    mu_.Lock();
    while (!stopping_) {
      const auto wait =
          options_.repair_interval.count() > 0 ? options_.repair_interval : std::chrono::milliseconds(5000);
      const bool woken = cv_.WaitFor(mu_, wait, [&]() FS_REQUIRES(mu_) { return stopping_ || repair_pending_; });
      if (stopping_) break;
      if (!woken && options_.repair_interval.count() > 0) repair_pending_ = true;  // the periodic pass
      if (!repair_pending_) continue;
      repair_pending_ = false;
      repair_running_ = true;
      mu_.Unlock();
      Status s = RepairOnce();
      mu_.Lock();
      repair_running_ = false;
      // A pass that could not reach every node is retried (the node may be coming back).
      if (!s.ok()) {
        repair_pending_ = true;
        cv_.WaitFor(mu_, std::chrono::seconds(1), [&]() FS_REQUIRES(mu_) { return stopping_; });
      }
      cv_.SignalAll();
    }
    mu_.Unlock();
  }

  bool WaitForRepair(std::chrono::milliseconds timeout) {
    MutexLock lock(mu_);
    return cv_.WaitFor(mu_, timeout, [&]() FS_REQUIRES(mu_) { return !repair_pending_ && !repair_running_; });
  }

  ClusterStats stats() const {
    MutexLock lock(mu_);
    ClusterStats s = stats_;
    s.members = view_->nodes.size();
    return s;
  }
  RepairStats repair_stats() const {
    MutexLock lock(mu_);
    RepairStats r = repair_;
    r.pending = repair_pending_ || repair_running_;
    return r;
  }

  Status RegisterBuffer(void* data, uint64_t size) {
    {
      MutexLock b(buffers_mu_);
      buffers_.push_back({data, size});
    }
    for (const auto& node : Snapshot()->nodes) {
      MutexLock lock(node->mu);
      if (!node->client) continue;
      FS_RETURN_IF_ERROR(node->client->RegisterBuffer(data, size).WithContext("node " + node->member.node_id));
    }
    return Status::OK();
  }

  ClusterClientOptions options_;
  std::unique_ptr<EtcdClient> etcd_;
  Mutex buffers_mu_;
  std::vector<std::pair<void*, uint64_t>> buffers_ FS_GUARDED_BY(buffers_mu_);

 private:
  mutable Mutex mu_;
  CondVar cv_;
  std::shared_ptr<const View> view_ FS_GUARDED_BY(mu_);
  ClusterStats stats_ FS_GUARDED_BY(mu_);
  RepairStats repair_ FS_GUARDED_BY(mu_);
  bool repair_pending_ FS_GUARDED_BY(mu_) = false;
  bool repair_running_ FS_GUARDED_BY(mu_) = false;
  bool stopping_ FS_GUARDED_BY(mu_) = false;
  std::atomic<bool> abandon_repair_{false};  // set by the destructor: a pass in progress stops early
  std::thread refresher_, repairer_;
};

StatusOr<std::unique_ptr<ClusterClient>> ClusterClient::Connect(const ClusterClientOptions& options) {
  if (options.replication < 1) return InvalidArgument("replication must be at least 1");
  auto impl = std::make_unique<Impl>(options);
  FS_ASSIGN_OR_RETURN(impl->etcd_, EtcdClient::Create(options.etcd));
  FS_RETURN_IF_ERROR(impl->RefreshMembership());
  if (impl->Snapshot()->nodes.empty())
    return Unavailable("no cache node is registered under " + options.prefix + " in etcd " + options.etcd +
                       " (start foresight-cached with --etcd)");
  impl->StartThreads();
  return std::unique_ptr<ClusterClient>(new ClusterClient(std::move(impl)));
}

ClusterClient::ClusterClient(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
ClusterClient::~ClusterClient() = default;

Status ClusterClient::PutBatch(std::span<BlockPut> items) { return impl_->PutBatch(items); }
Status ClusterClient::GetBatch(std::span<BlockGet> items) { return impl_->GetBatch(items); }

Status ClusterClient::Put(const BlockKey& key, const void* data, uint64_t size) {
  BlockPut p{key, data, size, {}};
  return PutBatch(std::span<BlockPut>(&p, 1));
}

StatusOr<uint64_t> ClusterClient::Get(const BlockKey& key, void* dest, uint64_t capacity,
                                      std::vector<ByteRange> ranges) {
  BlockGet g;
  g.key = key;
  g.ranges = std::move(ranges);
  g.dest = dest;
  g.capacity = capacity;
  Status s = GetBatch(std::span<BlockGet>(&g, 1));
  if (!s.ok()) return s;
  return g.bytes;
}

std::vector<ClusterMember> ClusterClient::members() const {
  std::vector<ClusterMember> out;
  for (const auto& n : impl_->Snapshot()->nodes) out.push_back(n->member);
  return out;
}

std::vector<std::string> ClusterClient::Owners(const BlockKey& key) const { return impl_->Owners(key); }

StatusOr<std::shared_ptr<CacheClient>> ClusterClient::NodeClient(const std::string& node_id) {
  auto view = impl_->Snapshot();
  for (const auto& n : view->nodes)
    if (n->member.node_id == node_id) return impl_->ClientOf(*n);
  return NotFound("node " + node_id + " is not in the member list");
}

Status ClusterClient::RegisterBuffer(void* data, uint64_t size) { return impl_->RegisterBuffer(data, size); }
Status ClusterClient::RefreshMembership() { return impl_->RefreshMembership(); }
Status ClusterClient::RepairOnce() { return impl_->RepairOnce(); }
bool ClusterClient::WaitForRepair(std::chrono::milliseconds timeout) { return impl_->WaitForRepair(timeout); }
ClusterStats ClusterClient::stats() const { return impl_->stats(); }
RepairStats ClusterClient::repair_stats() const { return impl_->repair_stats(); }

namespace {

class ClusterCacheClient final : public CacheClient {
 public:
  ClusterCacheClient(std::unique_ptr<ClusterClient> cluster, std::string address)
      : cluster_(std::move(cluster)), address_(std::move(address)) {}

  Status RegisterBuffer(void* data, uint64_t size) override { return cluster_->RegisterBuffer(data, size); }
  StatusOr<uint8_t*> NewBuffer(uint64_t size) override {
    auto buffer = std::make_unique<uint8_t[]>(size);
    FS_RETURN_IF_ERROR(cluster_->RegisterBuffer(buffer.get(), size));
    MutexLock lock(mu_);
    buffers_.push_back(std::move(buffer));
    return buffers_.back().get();
  }
  Status PutBatch(std::span<BlockPut> items) override { return Count(cluster_->PutBatch(items), items); }
  Status GetBatch(std::span<BlockGet> items) override { return Count(cluster_->GetBatch(items), items); }
  std::future<Status> PutBatchAsync(std::span<BlockPut> items) override {
    return std::async(std::launch::async, [this, items] { return PutBatch(items); });
  }
  std::future<Status> GetBatchAsync(std::span<BlockGet> items) override {
    return std::async(std::launch::async, [this, items] { return GetBatch(items); });
  }

  StatusOr<NodeInfo> Info() override {
    NodeInfo info;
    info.node_id = address_;
    info.version = "cluster";
    bool first = true;
    for (const auto& m : cluster_->members()) {
      auto c = cluster_->NodeClient(m.node_id);
      if (!c.ok()) continue;
      auto i = (*c)->Info();
      if (!i.ok()) continue;
      info.max_block_bytes = first ? i->max_block_bytes : std::min(info.max_block_bytes, i->max_block_bytes);
      info.ram_bytes += i->ram_bytes;
      info.nvme_bytes += i->nvme_bytes;
      info.nvme_enabled = info.nvme_enabled || i->nvme_enabled;
      first = false;
    }
    if (first) return Unavailable("no member of cluster " + address_ + " answered Info");
    return info;
  }
  Status Health() override {
    for (const auto& m : cluster_->members()) {
      auto c = cluster_->NodeClient(m.node_id);
      if (!c.ok()) return c.status();
      FS_RETURN_IF_ERROR((*c)->Health().WithContext("node " + m.node_id));
    }
    return Status::OK();
  }
  StatusOr<RemoteBlockInfo> Stat(const BlockKey& key) override {
    Status last = NotFound("block " + key.ToHex() + " is on none of its owners");
    for (const auto& owner : cluster_->Owners(key)) {
      auto c = cluster_->NodeClient(owner);
      if (!c.ok()) continue;
      auto info = (*c)->Stat(key);
      if (info.ok()) return info;
      if (info.status().code() != StatusCode::kNotFound) last = info.status();
    }
    return last;
  }
  StatusOr<std::vector<RemoteBlockInfo>> List(uint32_t limit) override {
    std::vector<RemoteBlockInfo> out;
    std::set<BlockKey> seen;
    for (const auto& m : cluster_->members()) {
      FS_ASSIGN_OR_RETURN(auto c, cluster_->NodeClient(m.node_id));
      FS_ASSIGN_OR_RETURN(auto blocks, c->List(limit));
      for (auto& b : blocks)
        if (seen.insert(b.key).second && out.size() < limit) out.push_back(b);
    }
    return out;
  }
  Status Evict(const BlockKey& key) override {
    bool any = false;
    for (const auto& m : cluster_->members()) {
      FS_ASSIGN_OR_RETURN(auto c, cluster_->NodeClient(m.node_id));
      Status s = c->Evict(key);
      if (s.ok())
        any = true;
      else if (s.code() != StatusCode::kNotFound)
        return s.WithContext("node " + m.node_id);
    }
    return any ? Status::OK() : NotFound("block " + key.ToHex() + " is on no member");
  }
  StatusOr<uint32_t> LongestPrefix(std::span<const BlockKey> chain) override {
    uint32_t n = 0;
    for (const BlockKey& key : chain) {
      if (!Stat(key).ok()) break;
      ++n;
    }
    return n;
  }
  Status Flush() override {
    for (const auto& m : cluster_->members()) {
      FS_ASSIGN_OR_RETURN(auto c, cluster_->NodeClient(m.node_id));
      FS_RETURN_IF_ERROR(c->Flush().WithContext("node " + m.node_id));
    }
    return Status::OK();
  }
  StatusOr<RemoteNodeStats> NodeStats() override {
    RemoteNodeStats sum;
    auto add = [](RemoteTierStats& a, const RemoteTierStats& b) {
      a.capacity_bytes += b.capacity_bytes;
      a.used_bytes += b.used_bytes;
      a.items += b.items;
      a.hits += b.hits;
      a.misses += b.misses;
      a.evictions += b.evictions;
    };
    for (const auto& m : cluster_->members()) {
      FS_ASSIGN_OR_RETURN(auto c, cluster_->NodeClient(m.node_id));
      FS_ASSIGN_OR_RETURN(auto s, c->NodeStats());
      add(sum.ram, s.ram);
      add(sum.nvme, s.nvme);
      sum.checksum_failures += s.checksum_failures;
      sum.promotions += s.promotions;
      sum.demotions += s.demotions;
      sum.active_leases += s.active_leases;
      sum.bytes_in += s.bytes_in;
      sum.bytes_out += s.bytes_out;
      sum.uptime_seconds = std::max(sum.uptime_seconds, s.uptime_seconds);
    }
    return sum;
  }
  ClientStats stats() override {
    MutexLock lock(mu_);
    ClientStats s = stats_;
    s.data_path = "cluster";
    return s;
  }
  const std::string& address() const override { return address_; }

 private:
  template <typename Item>
  Status Count(Status s, std::span<Item> items) {
    MutexLock lock(mu_);
    for (const auto& it : items) {
      if (!it.status.ok()) {
        ++stats_.errors;
        continue;
      }
      if constexpr (std::is_same_v<Item, BlockPut>) {
        ++stats_.puts;
        stats_.bytes_out += it.size;
      } else {
        ++stats_.gets;
        stats_.bytes_in += it.bytes;
      }
    }
    return s;
  }

  std::unique_ptr<ClusterClient> cluster_;
  std::string address_;
  Mutex mu_;
  ClientStats stats_ FS_GUARDED_BY(mu_);
  std::vector<std::unique_ptr<uint8_t[]>> buffers_ FS_GUARDED_BY(mu_);
};

}  // namespace

StatusOr<std::unique_ptr<CacheClient>> ConnectClusterAsCacheClient(const ClusterClientOptions& options) {
  FS_ASSIGN_OR_RETURN(auto cluster, ClusterClient::Connect(options));
  return std::unique_ptr<CacheClient>(new ClusterCacheClient(std::move(cluster), "cluster:" + options.etcd));
}

}  // namespace foresight
