// SvgChart: a line chart written as a standalone SVG file (title, axis labels with units, ticks,
// a legend), enough for the planner's plots without a plotting library. Axes may be logarithmic.
//
//   SvgChart chart("Sequences per node", "context (tokens)", "sequences");
//   chart.set_log_x(true);
//   chart.AddSeries("RAM", {{8192, 5}, {32768, 1}});
//   FS_RETURN_IF_ERROR(WriteWholeFile("seq.svg", chart.Render()));
//
// Thread-safety: value type.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace foresight::planner {

class SvgChart {
 public:
  SvgChart(std::string title, std::string x_label, std::string y_label)
      : title_(std::move(title)), x_label_(std::move(x_label)), y_label_(std::move(y_label)) {}

  void set_log_x(bool on) { log_x_ = on; }
  void set_log_y(bool on) { log_y_ = on; }
  // A dashed series is drawn for limits (what is available) beside solid demands.
  void AddSeries(std::string name, std::vector<std::pair<double, double>> points, bool dashed = false) {
    series_.push_back({std::move(name), std::move(points), dashed});
  }
  std::string Render() const;

 private:
  struct Series {
    std::string name;
    std::vector<std::pair<double, double>> points;
    bool dashed;
  };
  std::string title_, x_label_, y_label_;
  bool log_x_ = false, log_y_ = false;
  std::vector<Series> series_;
};

}  // namespace foresight::planner
