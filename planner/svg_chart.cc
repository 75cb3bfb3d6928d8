#include "planner/svg_chart.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <sstream>

namespace foresight::planner {
namespace {

constexpr double kWidth = 720, kHeight = 440;
constexpr double kLeft = 80, kRight = 190, kTop = 48, kBottom = 64;  // margins; the legend sits right
const char* const kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"};

std::string Escape(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '<')
      out += "&lt;";
    else if (c == '>')
      out += "&gt;";
    else if (c == '&')
      out += "&amp;";
    else
      out += c;
  }
  return out;
}

std::string Number(double v) {
  char buf[32];
  const double a = std::fabs(v);
  if (a >= 1e9) {
    std::snprintf(buf, sizeof buf, "%gG", v / 1e9);
  } else if (a >= 1e6) {
    std::snprintf(buf, sizeof buf, "%gM", v / 1e6);
  } else if (a >= 1e4) {
    std::snprintf(buf, sizeof buf, "%gK", v / 1e3);
  } else {
    std::snprintf(buf, sizeof buf, "%g", v);
  }
  return buf;
}

// An axis from lo to hi mapped to [0, 1], linear or logarithmic, with its tick values.
struct Axis {
  double lo, hi;
  bool log;
  double Map(double v) const {
    if (log) return (std::log10(v) - std::log10(lo)) / (std::log10(hi) - std::log10(lo));
    return (v - lo) / (hi - lo);
  }
  std::vector<double> Ticks() const {
    std::vector<double> ticks;
    if (log) {
      for (double t = std::pow(10.0, std::floor(std::log10(lo))); t <= hi * 1.0001; t *= 10) {
        if (t >= lo * 0.9999) ticks.push_back(t);
      }
      if (ticks.size() < 3) {  // a narrow range: powers of two instead
        ticks.clear();
        for (double t = std::pow(2.0, std::floor(std::log2(lo))); t <= hi * 1.0001; t *= 2) {
          if (t >= lo * 0.9999) ticks.push_back(t);
        }
      }
      return ticks;
    }
    const double raw = (hi - lo) / 5, mag = std::pow(10.0, std::floor(std::log10(raw)));
    const double step = raw / mag < 2 ? 2 * mag : raw / mag < 5 ? 5 * mag : 10 * mag;
    for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-6; t += step) ticks.push_back(t);
    return ticks;
  }
};

Axis MakeAxis(double lo, double hi, bool log) {
  if (log) {
    lo = std::max(lo, 1e-12);
    hi = std::max(hi, lo * 10);
    return {std::pow(10.0, std::floor(std::log10(lo))), std::pow(10.0, std::ceil(std::log10(hi))), true};
  }
  lo = std::min(lo, 0.0);
  if (hi <= lo) hi = lo + 1;
  return {lo, hi * 1.05, false};
}

}  // namespace

std::string SvgChart::Render() const {
  double x_lo = std::numeric_limits<double>::infinity(), x_hi = -x_lo, y_lo = x_lo, y_hi = -x_lo;
  for (const Series& s : series_) {
    for (auto [x, y] : s.points) {
      if ((log_x_ && x <= 0) || (log_y_ && y <= 0)) continue;
      x_lo = std::min(x_lo, x), x_hi = std::max(x_hi, x);
      y_lo = std::min(y_lo, y), y_hi = std::max(y_hi, y);
    }
  }
  if (!std::isfinite(x_lo)) x_lo = 1, x_hi = 10, y_lo = 1, y_hi = 10;
  const Axis ax = log_x_ ? MakeAxis(x_lo, x_hi, true) : Axis{x_lo, x_hi > x_lo ? x_hi : x_lo + 1, false};
  const Axis ay = MakeAxis(y_lo, y_hi, log_y_);
  const double pw = kWidth - kLeft - kRight, ph = kHeight - kTop - kBottom;
  auto px = [&](double x) { return kLeft + ax.Map(x) * pw; };
  auto py = [&](double y) { return kTop + (1 - ay.Map(y)) * ph; };

  std::ostringstream o;
  o << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << kWidth << "\" height=\"" << kHeight
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  o << "<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  o << "<text x=\"" << kWidth / 2 << "\" y=\"24\" text-anchor=\"middle\" font-size=\"15\" font-weight=\"bold\">"
    << Escape(title_) << "</text>\n";
  for (double t : ax.Ticks()) {
    o << "<line x1=\"" << px(t) << "\" y1=\"" << kTop << "\" x2=\"" << px(t) << "\" y2=\"" << kTop + ph
      << "\" stroke=\"#ddd\"/>\n";
    o << "<text x=\"" << px(t) << "\" y=\"" << kTop + ph + 16 << "\" text-anchor=\"middle\">" << Number(t)
      << "</text>\n";
  }
  for (double t : ay.Ticks()) {
    o << "<line x1=\"" << kLeft << "\" y1=\"" << py(t) << "\" x2=\"" << kLeft + pw << "\" y2=\"" << py(t)
      << "\" stroke=\"#ddd\"/>\n";
    o << "<text x=\"" << kLeft - 6 << "\" y=\"" << py(t) + 4 << "\" text-anchor=\"end\">" << Number(t) << "</text>\n";
  }
  o << "<rect x=\"" << kLeft << "\" y=\"" << kTop << "\" width=\"" << pw << "\" height=\"" << ph
    << "\" fill=\"none\" stroke=\"black\"/>\n";
  o << "<text x=\"" << kLeft + pw / 2 << "\" y=\"" << kHeight - 20 << "\" text-anchor=\"middle\">" << Escape(x_label_)
    << "</text>\n";
  o << "<text transform=\"translate(18," << kTop + ph / 2 << ") rotate(-90)\" text-anchor=\"middle\">"
    << Escape(y_label_) << "</text>\n";
  for (size_t i = 0; i < series_.size(); ++i) {
    const Series& s = series_[i];
    const char* colour = kColours[i % (sizeof kColours / sizeof kColours[0])];
    std::ostringstream path;
    bool first = true;
    for (auto [x, y] : s.points) {
      if ((log_x_ && x <= 0) || (log_y_ && y <= 0)) continue;
      path << (first ? "M" : " L") << px(x) << "," << py(y);
      first = false;
    }
    o << "<path d=\"" << path.str() << "\" fill=\"none\" stroke=\"" << colour << "\" stroke-width=\"2\""
      << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << "/>\n";
    for (auto [x, y] : s.points) {
      if ((log_x_ && x <= 0) || (log_y_ && y <= 0)) continue;
      o << "<circle cx=\"" << px(x) << "\" cy=\"" << py(y) << "\" r=\"3\" fill=\"" << colour << "\"/>\n";
    }
    const double ly = kTop + 10 + 20 * static_cast<double>(i);
    o << "<line x1=\"" << kLeft + pw + 12 << "\" y1=\"" << ly << "\" x2=\"" << kLeft + pw + 36 << "\" y2=\"" << ly
      << "\" stroke=\"" << colour << "\" stroke-width=\"2\"" << (s.dashed ? " stroke-dasharray=\"6,4\"" : "") << "/>\n";
    o << "<text x=\"" << kLeft + pw + 42 << "\" y=\"" << ly + 4 << "\">" << Escape(s.name) << "</text>\n";
  }
  o << "</svg>\n";
  return o.str();
}

}  // namespace foresight::planner
