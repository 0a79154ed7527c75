// Engine logging: one line per event, in uvicorn's layout ("LEVEL:    message").
// The ASGI bridge may install a sink that forwards to Python's logging module;
// until then lines go to stderr. Syscall failures are logged with log_errno().
#pragma once

#include <cstdarg>
#include <string_view>

namespace pronghorn {

enum class LogLevel { Trace = 5, Debug = 10, Info = 20, Warning = 30, Error = 40, Critical = 50 };

using LogSink = void (*)(LogLevel level, std::string_view message);

void set_log_level(LogLevel level);
bool log_enabled(LogLevel level);
void set_log_sink(LogSink sink);  // nullptr restores the stderr sink
// Called before each line at Warning or above is written: the server writes
// its buffered access log there, so that a terminal shows the access line of
// a request before a later warning or error about it. One per process (the
// last set wins); nullptr removes it.
void set_log_before_problem(void (*hook)(void *ctx), void *ctx);

void log(LogLevel level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
// Appends ": <strerror(err)> (errno <err>)" to the message.
void log_errno(LogLevel level, int err, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

// "INFO:     " with ANSI colours when `colours` is set: the prefix every line starts with.
std::string_view level_prefix(LogLevel level, bool colours);

}  // namespace pronghorn
