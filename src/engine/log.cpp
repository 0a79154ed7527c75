#include "engine/log.h"

#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <string>

namespace pronghorn {

namespace {

LogLevel g_level = LogLevel::Info;
LogSink g_sink = nullptr;
void (*g_before_problem)(void *) = nullptr;
void *g_before_problem_ctx = nullptr;

void stderr_sink(LogLevel level, std::string_view message) {
  static const bool colours = isatty(2) == 1;
  std::string line(level_prefix(level, colours));
  line.append(message);
  line.push_back('\n');
  // A short write to stderr loses part of a log line; nothing better can be done.
  ssize_t ignored = write(2, line.data(), line.size());
  (void)ignored;
}

void vlog(LogLevel level, int err, const char *fmt, va_list ap) {
  char buf[2048];
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  if (n < 0) return;
  size_t len = static_cast<size_t>(n) < sizeof buf ? static_cast<size_t>(n) : sizeof buf - 1;
  std::string message(buf, len);
  if (err != 0) {
    message += ": ";
    message += strerror(err);
    message += " (errno ";
    message += std::to_string(err);
    message += ")";
  }
  if (level >= LogLevel::Warning && g_before_problem != nullptr) g_before_problem(g_before_problem_ctx);
  (g_sink ? g_sink : stderr_sink)(level, message);
}

}  // namespace

void set_log_before_problem(void (*hook)(void *ctx), void *ctx) {
  g_before_problem = hook;
  g_before_problem_ctx = ctx;
}

void set_log_level(LogLevel level) {
  g_level = level;
}
bool log_enabled(LogLevel level) {
  return level >= g_level;
}
void set_log_sink(LogSink sink) {
  g_sink = sink;
}

void log(LogLevel level, const char *fmt, ...) {
  if (!log_enabled(level)) return;
  va_list ap;
  va_start(ap, fmt);
  vlog(level, 0, fmt, ap);
  va_end(ap);
}

void log_errno(LogLevel level, int err, const char *fmt, ...) {
  if (!log_enabled(level)) return;
  va_list ap;
  va_start(ap, fmt);
  vlog(level, err, fmt, ap);
  va_end(ap);
}

std::string_view level_prefix(LogLevel level, bool colours) {
  // uvicorn pads "LEVEL:" to 9 columns and adds one space.
  switch (level) {
    case LogLevel::Trace: return colours ? "\033[34mTRACE\033[0m:    " : "TRACE:    ";
    case LogLevel::Debug: return colours ? "\033[36mDEBUG\033[0m:    " : "DEBUG:    ";
    case LogLevel::Info: return colours ? "\033[32mINFO\033[0m:     " : "INFO:     ";
    case LogLevel::Warning: return colours ? "\033[33mWARNING\033[0m:  " : "WARNING:  ";
    case LogLevel::Error: return colours ? "\033[31mERROR\033[0m:    " : "ERROR:    ";
    case LogLevel::Critical: return colours ? "\033[91mCRITICAL\033[0m: " : "CRITICAL: ";
  }
  return "";
}

}  // namespace pronghorn
