// The request task: runs one request's ASGI coroutine in place of an
// asyncio.Task, starting it at once (the app's first step runs while the
// request is dispatched, as with Python 3.12's eager tasks).
//
// Why: with asyncio.Task on Python 3.11 each request pays for the Task's
// registration in a Python-level WeakSet (and its removal), a formatted
// "Task-N" name, a call_soon and a pass of the event loop before the app
// runs, and the task's deallocation: about 9,500 of the 24,000 instructions a
// raw hello-world request cost (callgrind, docs/performance.md). A request
// whose app never waits (the common case for small responses) now completes
// within the dispatch.
//
// What the app sees: asyncio.current_task() is this object for the whole
// request, and it behaves as an asyncio.Task for the code that uses the
// current task: cancel()/cancelling()/uncancel() (asyncio.timeout, TaskGroup,
// anyio cancel scopes), done callbacks and result()/exception() (gather,
// wait), get_coro()/get_name()/get_context()/get_loop(), weak references, and
// the attributes anyio reads (_must_cancel, _fut_waiter). It is not an
// instance of asyncio.Task and is not listed by asyncio.all_tasks().
// `--asyncio-tasks` runs requests in asyncio Tasks instead.
//
// Stepping follows asyncio.Task: a yielded Future (`_asyncio_future_blocking`
// set) is waited on through add_done_callback; a bare yield reschedules with
// call_soon; cancel() cancels the awaited Future, or makes the next step
// raise CancelledError. The task's context is entered around every step and
// the task is registered as the loop's current task meanwhile.
#include "bridge/bridge.h"

namespace pronghorn::bridge {

namespace {

enum class TaskState { Pending, Finished, Cancelled };

struct TaskObject {
  PyObject_HEAD PyObject *weakreflist;
  // Strong references, not the AppServer: the task can outlive the server
  // (libraries keep the current task).
  PyObject *loop;
  PyObject *task_set;    // the server's set of running tasks
  PyObject *request;     // the RequestObject, strong
  PyObject *coro;        // the app's coroutine
  PyObject *context;     // contextvars.Context of this request
  PyObject *fut_waiter;  // the Future the coroutine waits for, or nullptr
  PyObject *callbacks;   // list of (callback, context) pairs, or nullptr
  PyObject *exception;   // the exception the coroutine ended with (or the CancelledError)
  PyObject *cancel_msg;  // message for the CancelledError of a requested cancellation
  PyObject *name;        // str, created when first asked for
  PyObject *step_cb;     // bound _step (for call_soon), created when needed
  PyObject *wakeup_cb;   // bound _wakeup (for Futures' done callbacks), created when needed
  unsigned long long number;
  int num_cancels_requested;
  TaskState state;
  bool must_cancel;
  bool blocking;  // _asyncio_future_blocking: true while a Task awaiting this task waits
};

unsigned long long task_counter = 0;

PyObject *cancelled_error_type = nullptr;      // asyncio.CancelledError
PyObject *invalid_state_error_type = nullptr;  // asyncio.InvalidStateError
PyObject *current_tasks = nullptr;             // asyncio.tasks._current_tasks: loop -> running task
PyObject *str_done = nullptr, *str_set_result = nullptr, *str_remove_done_callback = nullptr;
PyObject *str_asyncio_future_blocking = nullptr, *str_get_loop = nullptr, *str_add_done_callback = nullptr,
         *str_context = nullptr, *str_call_soon = nullptr, *str_result = nullptr, *str_cancel = nullptr,
         *str_msg = nullptr;
PyObject *context_kwnames = nullptr;  // ("context",)
PyObject *msg_kwnames = nullptr;      // ("msg",)

// Runs the coroutine until it yields or ends; see the definition.
void task_step(TaskObject *self, PyObject *exc, bool enter_context);

PyObject *bound(TaskObject *self, PyObject *&slot, PyMethodDef *def) {
  if (slot == nullptr) slot = PyCFunction_New(def, reinterpret_cast<PyObject *>(self));
  return slot;
}

PyObject *step_method(PyObject *op, PyObject *) {
  task_step(reinterpret_cast<TaskObject *>(op), nullptr, false);
  Py_RETURN_NONE;
}

PyObject *step_with_exception_method(PyObject *op, PyObject *exc) {
  task_step(reinterpret_cast<TaskObject *>(op), exc, false);
  Py_RETURN_NONE;
}

// A Future the task waited for is done: resume with its result, or throw its
// exception into the coroutine.
PyObject *wakeup_method(PyObject *op, PyObject *future) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  PyObject *result = PyObject_CallMethodNoArgs(future, str_result);
  if (result != nullptr) {
    Py_DECREF(result);
    task_step(self, nullptr, false);
    Py_RETURN_NONE;
  }
  PyObject *exc = take_exception();
  task_step(self, exc, false);
  Py_XDECREF(exc);
  Py_RETURN_NONE;
}

PyMethodDef step_def = {"_step", step_method, METH_NOARGS, nullptr};
PyMethodDef step_exc_def = {"_step_with", step_with_exception_method, METH_O, nullptr};
PyMethodDef wakeup_def = {"_wakeup", wakeup_method, METH_O, nullptr};

// loop.call_soon(callback[, arg], context=context)
bool call_soon(TaskObject *self, PyObject *callback, PyObject *arg, PyObject *context) {
  PyObject *method = PyObject_GetAttr(self->loop, str_call_soon);
  if (method == nullptr) return false;
  // Vectorcall layout: the positional arguments, then the keyword's value.
  PyObject *args[3];
  size_t nargs = 0;
  args[nargs++] = callback;
  if (arg != nullptr) args[nargs++] = arg;
  args[nargs] = context;
  PyObject *r = PyObject_Vectorcall(method, args, nargs, context_kwnames);
  Py_DECREF(method);
  Py_XDECREF(r);
  return r != nullptr;
}

// future.cancel() or future.cancel(msg=msg); new reference or nullptr.
PyObject *cancel_future(PyObject *future, PyObject *msg) {
  PyObject *cancel = PyObject_GetAttr(future, str_cancel);
  if (cancel == nullptr) return nullptr;
  PyObject *args[1] = {msg};
  PyObject *r = msg != nullptr && msg != Py_None ? PyObject_Vectorcall(cancel, args, 0, msg_kwnames)
                                                 : PyObject_CallNoArgs(cancel);
  Py_DECREF(cancel);
  return r;
}

void schedule_step(TaskObject *self, PyObject *exc) {
  bool ok;
  if (exc == nullptr) {
    PyObject *cb = bound(self, self->step_cb, &step_def);
    ok = cb != nullptr && call_soon(self, cb, nullptr, self->context);
  } else {
    PyObject *cb = PyCFunction_New(&step_exc_def, reinterpret_cast<PyObject *>(self));
    ok = cb != nullptr && call_soon(self, cb, exc, self->context);
    Py_XDECREF(cb);
  }
  if (!ok) PyErr_WriteUnraisable(reinterpret_cast<PyObject *>(self));
}

PyObject *new_cancelled_error(TaskObject *self) {
  PyObject *msg = self->cancel_msg;
  return msg != nullptr && msg != Py_None ? PyObject_CallOneArg(cancelled_error_type, msg)
                                          : PyObject_CallNoArgs(cancelled_error_type);
}

// The coroutine has ended: record how (`cancelled`: the task's state), tell
// the request (`app_cancelled`: the app's coroutine was cancelled;
// `returned`: the value it returned, if it did), then schedule the done
// callbacks.
void task_finish(TaskObject *self, PyObject *exc, bool cancelled, bool app_cancelled, PyObject *returned = nullptr) {
  self->state = cancelled ? TaskState::Cancelled : TaskState::Finished;
  Py_XSETREF(self->exception, Py_XNewRef(exc));
  if (PySet_Discard(self->task_set, reinterpret_cast<PyObject *>(self)) < 0)
    PyErr_WriteUnraisable(reinterpret_cast<PyObject *>(self));
  complete_request(self->request, cancelled ? nullptr : exc, app_cancelled, returned);
  PyObject *callbacks = self->callbacks;
  self->callbacks = nullptr;
  if (callbacks != nullptr) {
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(callbacks); ++i) {
      PyObject *pair = PyList_GET_ITEM(callbacks, i);
      if (!call_soon(self, PyTuple_GET_ITEM(pair, 0), reinterpret_cast<PyObject *>(self), PyTuple_GET_ITEM(pair, 1)))
        PyErr_WriteUnraisable(reinterpret_cast<PyObject *>(self));
    }
    Py_DECREF(callbacks);
  }
  // The coroutine is done with: drop what keeps objects alive.
  Py_CLEAR(self->step_cb);
  Py_CLEAR(self->wakeup_cb);
}

// The coroutine yielded `result`: arrange to be resumed (asyncio.Task's rules).
void task_wait_for(TaskObject *self, PyObject *result) {
  if (result == Py_None) {  // bare yield: run again on the next loop pass
    schedule_step(self, nullptr);
    return;
  }
  PyObject *blocking = PyObject_GetAttr(result, str_asyncio_future_blocking);
  if (blocking == nullptr) PyErr_Clear();
  PyObject *error = nullptr;
  if (blocking == nullptr || blocking == Py_None) {
    error = PyUnicode_FromFormat("Task got bad yield: %R", result);
  } else if (PyObject_IsTrue(blocking) != 1) {
    error = PyUnicode_FromFormat("yield was used instead of yield from in task %R with %R",
                                 reinterpret_cast<PyObject *>(self), result);
  } else if (result == reinterpret_cast<PyObject *>(self)) {
    error = PyUnicode_FromFormat("Task cannot await on itself: %R", result);
  } else {
    PyObject *loop = PyObject_CallMethodNoArgs(result, str_get_loop);
    if (loop == nullptr) {
      PyErr_WriteUnraisable(result);
      error = PyUnicode_FromFormat("Task got Future %R without a loop", result);
    } else {
      if (loop != self->loop)
        error = PyUnicode_FromFormat("Task %R got Future %R attached to a different loop",
                                     reinterpret_cast<PyObject *>(self), result);
      Py_DECREF(loop);
    }
  }
  Py_XDECREF(blocking);
  if (error != nullptr) {
    PyObject *exc = PyObject_CallOneArg(PyExc_RuntimeError, error);
    Py_DECREF(error);
    if (exc == nullptr) {
      PyErr_WriteUnraisable(reinterpret_cast<PyObject *>(self));
      return;
    }
    schedule_step(self, exc);
    Py_DECREF(exc);
    return;
  }
  if (PyErr_Occurred()) {  // PyUnicode_FromFormat failed
    PyErr_WriteUnraisable(reinterpret_cast<PyObject *>(self));
    return;
  }
  if (PyObject_SetAttr(result, str_asyncio_future_blocking, Py_False) < 0) {
    PyErr_WriteUnraisable(result);
    return;
  }
  PyObject *wakeup = bound(self, self->wakeup_cb, &wakeup_def);
  PyObject *add = wakeup == nullptr ? nullptr : PyObject_GetAttr(result, str_add_done_callback);
  PyObject *r = nullptr;
  if (add != nullptr) {
    PyObject *args[2] = {wakeup, self->context};
    r = PyObject_Vectorcall(add, args, 1, context_kwnames);
    Py_DECREF(add);
  }
  if (r == nullptr) {
    PyErr_WriteUnraisable(result);
    return;
  }
  Py_DECREF(r);
  Py_XSETREF(self->fut_waiter, Py_NewRef(result));
  if (self->must_cancel) {
    // cancel() was called while the coroutine ran: pass it on to the Future.
    PyObject *cancelled = cancel_future(result, self->cancel_msg);
    if (cancelled == Py_True) self->must_cancel = false;
    if (cancelled == nullptr) PyErr_WriteUnraisable(result);
    Py_XDECREF(cancelled);
  }
}

// Runs the coroutine until it yields or ends. `exc` (borrowed, may be
// nullptr) is thrown into it. Leaves no Python exception set. Steps run from
// the loop are scheduled in the task's context (call_soon and
// add_done_callback with context=); only the first, eager step enters it here.
// As in asyncio, the task stays the current task (and in its context) while
// the outcome is handled, so the server's log of an app error sees both.
void task_step(TaskObject *self, PyObject *exc, bool enter_context) {
  if (self->state != TaskState::Pending) return;
  Py_INCREF(self);  // the coroutine may drop the last other reference
  PyObject *thrown = Py_XNewRef(exc);
  bool cancel_failed = false;  // the CancelledError to throw could not be made (exception set)
  if (self->must_cancel) {
    if (thrown == nullptr || !PyObject_TypeCheck(thrown, reinterpret_cast<PyTypeObject *>(cancelled_error_type))) {
      Py_XSETREF(thrown, new_cancelled_error(self));
      cancel_failed = thrown == nullptr;
    }
    self->must_cancel = false;
  }
  Py_CLEAR(self->fut_waiter);

  PyObject *loop = self->loop;
  bool in_context = !cancel_failed && (!enter_context || PyContext_Enter(self->context) == 0);
  PyObject *other = nullptr;
  bool entered = false;
  if (in_context) {
    other = PyDict_GetItemWithError(current_tasks, loop);  // borrowed
    entered = other == nullptr && !PyErr_Occurred() &&
              PyDict_SetItem(current_tasks, loop, reinterpret_cast<PyObject *>(self)) == 0;
  }
  PyObject *result = nullptr;
  PySendResult status;
  if (!entered) {
    // Could not enter the context or register as the current task (or create
    // the CancelledError): the task ends with that error.
    if (!PyErr_Occurred())
      PyErr_Format(PyExc_RuntimeError, "Cannot enter into task %R while another task %R is being executed.",
                   reinterpret_cast<PyObject *>(self), other);
    status = PYGEN_ERROR;
  } else {
    // A step: a response head the app holds when it ends goes out then.
    Engine &engine = request_engine(self->request);
    engine.begin_step();
    if (thrown == nullptr) {
      status = PyIter_Send(self->coro, Py_None, &result);
    } else {
      PyObject *method = PyObject_GetAttrString(self->coro, "throw");
      result = method == nullptr ? nullptr : PyObject_CallOneArg(method, thrown);
      Py_XDECREF(method);
      status = result != nullptr ? PYGEN_NEXT : PYGEN_ERROR;
      if (status == PYGEN_ERROR && PyErr_ExceptionMatches(PyExc_StopIteration)) {
        PyErr_Clear();
        result = Py_NewRef(Py_None);
        status = PYGEN_RETURN;
      }
    }
    end_app_step(engine);
  }
  Py_XDECREF(thrown);

  // The exception the coroutine raised, if any.
  PyObject *error = status == PYGEN_ERROR ? take_exception() : nullptr;

  if (status == PYGEN_NEXT) {
    task_wait_for(self, result);
  } else if (status == PYGEN_RETURN && self->must_cancel) {
    // cancel() came while the last step ran: asyncio reports the task
    // cancelled, though the app's coroutine returned normally.
    self->must_cancel = false;
    PyObject *cancelled = new_cancelled_error(self);
    if (cancelled == nullptr) PyErr_WriteUnraisable(reinterpret_cast<PyObject *>(self));
    task_finish(self, cancelled, true, false);
    Py_XDECREF(cancelled);
  } else if (status == PYGEN_RETURN) {
    task_finish(self, nullptr, false, false, result);
  } else {
    bool cancelled =
        error != nullptr && PyObject_TypeCheck(error, reinterpret_cast<PyTypeObject *>(cancelled_error_type));
    task_finish(self, error, cancelled, cancelled);
  }
  if (entered && PyDict_DelItem(current_tasks, loop) < 0) PyErr_WriteUnraisable(reinterpret_cast<PyObject *>(self));
  if (enter_context && in_context && PyContext_Exit(self->context) < 0)
    PyErr_WriteUnraisable(reinterpret_cast<PyObject *>(self));
  Py_XDECREF(result);
  Py_XDECREF(error);
  Py_DECREF(self);
}

// ---------------------------------------------------------------- methods

PyObject *task_done(PyObject *op, PyObject *) {
  return PyBool_FromLong(reinterpret_cast<TaskObject *>(op)->state != TaskState::Pending);
}

PyObject *task_cancelled(PyObject *op, PyObject *) {
  return PyBool_FromLong(reinterpret_cast<TaskObject *>(op)->state == TaskState::Cancelled);
}

PyObject *raise_cancelled(TaskObject *self) {
  if (self->exception != nullptr) {
    PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(self->exception)), self->exception);
  } else {
    PyErr_SetNone(cancelled_error_type);
  }
  return nullptr;
}

PyObject *task_result(PyObject *op, PyObject *) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  if (self->state == TaskState::Pending) {
    PyErr_SetString(invalid_state_error_type, "Result is not set.");
    return nullptr;
  }
  if (self->state == TaskState::Cancelled) return raise_cancelled(self);
  if (self->exception != nullptr) {
    PyErr_SetObject(reinterpret_cast<PyObject *>(Py_TYPE(self->exception)), self->exception);
    return nullptr;
  }
  Py_RETURN_NONE;
}

PyObject *task_exception(PyObject *op, PyObject *) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  if (self->state == TaskState::Pending) {
    PyErr_SetString(invalid_state_error_type, "Exception is not set.");
    return nullptr;
  }
  if (self->state == TaskState::Cancelled) return raise_cancelled(self);
  return Py_NewRef(self->exception != nullptr ? self->exception : Py_None);
}

PyObject *task_make_cancelled_error(PyObject *op, PyObject *) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  if (self->state == TaskState::Cancelled && self->exception != nullptr) return Py_NewRef(self->exception);
  return new_cancelled_error(self);
}

PyObject *task_add_done_callback(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  if (nargs != 1) {
    PyErr_SetString(PyExc_TypeError, "add_done_callback() takes one positional argument");
    return nullptr;
  }
  PyObject *context = nullptr;
  Py_ssize_t nkw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t i = 0; i < nkw; ++i) {
    if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "context") != 0) {
      PyErr_SetString(PyExc_TypeError, "add_done_callback() got an unexpected keyword argument");
      return nullptr;
    }
    context = args[nargs + i];
  }
  PyObject *ctx = context != nullptr && context != Py_None ? Py_NewRef(context) : PyContext_CopyCurrent();
  if (ctx == nullptr) return nullptr;
  if (self->state != TaskState::Pending) {
    bool ok = call_soon(self, args[0], op, ctx);
    Py_DECREF(ctx);
    if (!ok) return nullptr;
    Py_RETURN_NONE;
  }
  if (self->callbacks == nullptr && (self->callbacks = PyList_New(0)) == nullptr) {
    Py_DECREF(ctx);
    return nullptr;
  }
  PyObject *pair = PyTuple_Pack(2, args[0], ctx);
  Py_DECREF(ctx);
  if (pair == nullptr) return nullptr;
  int rc = PyList_Append(self->callbacks, pair);
  Py_DECREF(pair);
  if (rc < 0) return nullptr;
  Py_RETURN_NONE;
}

PyObject *task_remove_done_callback(PyObject *op, PyObject *fn) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  if (self->callbacks == nullptr) return PyLong_FromLong(0);
  // __eq__ may run any code (even finish the task): walk our own reference.
  PyObject *callbacks = Py_NewRef(self->callbacks);
  PyObject *kept = PyList_New(0);
  long removed = 0;
  for (Py_ssize_t i = 0; kept != nullptr && i < PyList_GET_SIZE(callbacks); ++i) {
    PyObject *pair = PyList_GET_ITEM(callbacks, i);
    int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(pair, 0), fn, Py_EQ);
    if (eq < 0 || (!eq && PyList_Append(kept, pair) < 0)) Py_CLEAR(kept);
    if (eq > 0) ++removed;
  }
  bool same = callbacks == self->callbacks;
  Py_DECREF(callbacks);
  if (kept == nullptr) return nullptr;
  if (same) {
    Py_SETREF(self->callbacks, kept);
  } else {
    Py_DECREF(kept);  // the task finished meanwhile: its callbacks are scheduled
  }
  return PyLong_FromLong(removed);
}

PyObject *task_cancel(PyObject *op, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  PyObject *msg = nargs > 0 ? args[0] : nullptr;
  Py_ssize_t nkw = kwnames == nullptr ? 0 : PyTuple_GET_SIZE(kwnames);
  for (Py_ssize_t i = 0; i < nkw; ++i) {
    if (PyUnicode_CompareWithASCIIString(PyTuple_GET_ITEM(kwnames, i), "msg") != 0) {
      PyErr_SetString(PyExc_TypeError, "cancel() got an unexpected keyword argument");
      return nullptr;
    }
    msg = args[nargs + i];
  }
  if (nargs + nkw > 1) {
    PyErr_SetString(PyExc_TypeError, "cancel() takes at most one argument");
    return nullptr;
  }
  if (self->state != TaskState::Pending) Py_RETURN_FALSE;
  ++self->num_cancels_requested;
  Py_XSETREF(self->cancel_msg, Py_XNewRef(msg));
  if (self->fut_waiter != nullptr) {
    PyObject *r = cancel_future(self->fut_waiter, msg);
    if (r == nullptr) return nullptr;
    bool waiter_cancelled = r == Py_True;
    Py_DECREF(r);
    // The Future's cancellation wakes the task with CancelledError.
    if (waiter_cancelled) Py_RETURN_TRUE;
  }
  self->must_cancel = true;
  Py_RETURN_TRUE;
}

PyObject *task_cancelling(PyObject *op, PyObject *) {
  return PyLong_FromLong(reinterpret_cast<TaskObject *>(op)->num_cancels_requested);
}

PyObject *task_uncancel(PyObject *op, PyObject *) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  if (self->num_cancels_requested > 0) --self->num_cancels_requested;
  return PyLong_FromLong(self->num_cancels_requested);
}

PyObject *task_get_loop(PyObject *op, PyObject *) {
  return Py_NewRef(reinterpret_cast<TaskObject *>(op)->loop);
}

PyObject *task_get_coro(PyObject *op, PyObject *) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  return Py_NewRef(self->coro != nullptr ? self->coro : Py_None);
}

PyObject *task_get_context(PyObject *op, PyObject *) {
  return Py_NewRef(reinterpret_cast<TaskObject *>(op)->context);
}

PyObject *task_get_name(PyObject *op, PyObject *) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  if (self->name == nullptr) self->name = PyUnicode_FromFormat("Request-%llu", self->number);
  return Py_XNewRef(self->name);
}

PyObject *task_set_name(PyObject *op, PyObject *value) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  PyObject *name = PyObject_Str(value);
  if (name == nullptr) return nullptr;
  Py_XSETREF(self->name, name);
  Py_RETURN_NONE;
}

PyObject *task_get_stack(PyObject *op, PyObject *const *, Py_ssize_t, PyObject *) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  PyObject *stack = PyList_New(0);
  if (stack == nullptr || self->coro == nullptr || self->state != TaskState::Pending) return stack;
  PyObject *frame = PyObject_GetAttrString(self->coro, "cr_frame");
  if (frame == nullptr) {
    PyErr_Clear();
    return stack;
  }
  if (frame != Py_None && PyList_Append(stack, frame) < 0) Py_CLEAR(stack);
  Py_DECREF(frame);
  return stack;
}

// `await task` from another coroutine: through an asyncio Future chained to
// this task (rare; nothing in the request path awaits the request's task).
PyObject *task_await(PyObject *op) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  PyObject *future = PyObject_CallMethod(self->loop, "create_future", nullptr);
  if (future == nullptr) return nullptr;
  PyObject *futures = PyImport_ImportModule("asyncio.futures");
  PyObject *chain = futures == nullptr ? nullptr : PyObject_GetAttrString(futures, "_chain_future");
  Py_XDECREF(futures);
  PyObject *r = chain == nullptr ? nullptr : PyObject_CallFunctionObjArgs(chain, op, future, nullptr);
  Py_XDECREF(chain);
  PyObject *iter = r == nullptr ? nullptr : PyObject_CallMethod(future, "__await__", nullptr);
  Py_XDECREF(r);
  Py_DECREF(future);
  return iter;
}

PyObject *task_repr(PyObject *op) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  const char *state = self->state == TaskState::Pending    ? "pending"
                      : self->state == TaskState::Finished ? "finished"
                                                           : "cancelled";
  PyObject *name = task_get_name(op, nullptr);
  if (name == nullptr) return nullptr;
  PyObject *repr = PyUnicode_FromFormat("<RequestTask %s name=%R coro=%R>", state, name,
                                        self->coro != nullptr ? self->coro : Py_None);
  Py_DECREF(name);
  return repr;
}

PyObject *get_blocking(PyObject *op, void *) {
  return PyBool_FromLong(reinterpret_cast<TaskObject *>(op)->blocking);
}

int set_blocking(PyObject *op, PyObject *value, void *) {
  if (value == nullptr) {
    PyErr_SetString(PyExc_AttributeError, "cannot delete _asyncio_future_blocking");
    return -1;
  }
  int truth = PyObject_IsTrue(value);
  if (truth < 0) return -1;
  reinterpret_cast<TaskObject *>(op)->blocking = truth != 0;
  return 0;
}

PyObject *get_fut_waiter(PyObject *op, void *) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  return Py_NewRef(self->fut_waiter != nullptr ? self->fut_waiter : Py_None);
}

PyObject *get_must_cancel(PyObject *op, void *) {
  return PyBool_FromLong(reinterpret_cast<TaskObject *>(op)->must_cancel);
}

PyObject *get_cancel_message(PyObject *op, void *) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  return Py_NewRef(self->cancel_msg != nullptr ? self->cancel_msg : Py_None);
}

PyObject *get_loop_attr(PyObject *op, void *) {
  return task_get_loop(op, nullptr);
}

PyObject *get_callbacks(PyObject *op, void *) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  if (self->callbacks == nullptr) return PyList_New(0);
  return PyList_GetSlice(self->callbacks, 0, PyList_GET_SIZE(self->callbacks));
}

PyObject *get_coro_attr(PyObject *op, void *) {
  return task_get_coro(op, nullptr);
}

int task_traverse(PyObject *op, visitproc visit, void *arg) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  Py_VISIT(self->loop);
  Py_VISIT(self->task_set);
  Py_VISIT(self->request);
  Py_VISIT(self->coro);
  Py_VISIT(self->context);
  Py_VISIT(self->fut_waiter);
  Py_VISIT(self->callbacks);
  Py_VISIT(self->exception);
  Py_VISIT(self->cancel_msg);
  Py_VISIT(self->step_cb);
  Py_VISIT(self->wakeup_cb);
  return 0;
}

int task_clear(PyObject *op) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  Py_CLEAR(self->coro);
  Py_CLEAR(self->fut_waiter);
  Py_CLEAR(self->callbacks);
  Py_CLEAR(self->exception);
  Py_CLEAR(self->cancel_msg);
  Py_CLEAR(self->step_cb);
  Py_CLEAR(self->wakeup_cb);
  return 0;
}

void task_dealloc(PyObject *op) {
  auto *self = reinterpret_cast<TaskObject *>(op);
  PyObject_GC_UnTrack(op);
  if (self->weakreflist != nullptr) PyObject_ClearWeakRefs(op);
  task_clear(op);
  Py_CLEAR(self->request);
  Py_CLEAR(self->context);
  Py_CLEAR(self->name);
  Py_CLEAR(self->loop);
  Py_CLEAR(self->task_set);
  PyObject_GC_Del(op);
}

#define FASTCALL_KW(fn) reinterpret_cast<PyCFunction>(reinterpret_cast<void (*)()>(fn)), METH_FASTCALL | METH_KEYWORDS

PyMethodDef task_methods[] = {{"done", task_done, METH_NOARGS, nullptr},
                              {"cancelled", task_cancelled, METH_NOARGS, nullptr},
                              {"result", task_result, METH_NOARGS, nullptr},
                              {"exception", task_exception, METH_NOARGS, nullptr},
                              {"add_done_callback", FASTCALL_KW(task_add_done_callback), nullptr},
                              {"remove_done_callback", task_remove_done_callback, METH_O, nullptr},
                              {"cancel", FASTCALL_KW(task_cancel), nullptr},
                              {"cancelling", task_cancelling, METH_NOARGS, nullptr},
                              {"uncancel", task_uncancel, METH_NOARGS, nullptr},
                              {"get_loop", task_get_loop, METH_NOARGS, nullptr},
                              {"get_coro", task_get_coro, METH_NOARGS, nullptr},
                              {"get_context", task_get_context, METH_NOARGS, nullptr},
                              {"get_name", task_get_name, METH_NOARGS, nullptr},
                              {"set_name", task_set_name, METH_O, nullptr},
                              {"get_stack", FASTCALL_KW(task_get_stack), nullptr},
                              {"_make_cancelled_error", task_make_cancelled_error, METH_NOARGS, nullptr},
                              {nullptr, nullptr, 0, nullptr}};

PyGetSetDef task_getset[] = {{"_asyncio_future_blocking", get_blocking, set_blocking, nullptr, nullptr},
                             {"_fut_waiter", get_fut_waiter, nullptr, nullptr, nullptr},
                             {"_must_cancel", get_must_cancel, nullptr, nullptr, nullptr},
                             {"_cancel_message", get_cancel_message, nullptr, nullptr, nullptr},
                             {"_loop", get_loop_attr, nullptr, nullptr, nullptr},
                             {"_callbacks", get_callbacks, nullptr, nullptr, nullptr},
                             {"_coro", get_coro_attr, nullptr, nullptr, nullptr},
                             {nullptr, nullptr, nullptr, nullptr, nullptr}};

PyAsyncMethods task_async = {task_await, nullptr, nullptr, nullptr};

PyObject *intern(const char *s) {
  return PyUnicode_InternFromString(s);
}

}  // namespace

PyTypeObject RequestTaskType{};

PyObject *running_request_task(PyObject *loop) {
  if (current_tasks == nullptr) return nullptr;
  PyObject *task = PyDict_GetItemWithError(current_tasks, loop);  // borrowed
  if (task == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  return Py_TYPE(task) == &RequestTaskType ? task : nullptr;
}

bool resolve_and_resume(PyObject *task_op, PyObject *future, PyObject *value) {
  PyObject *done = PyObject_CallMethodNoArgs(future, str_done);
  bool pending = done == Py_False;
  Py_XDECREF(done);
  if (done == nullptr) PyErr_WriteUnraisable(future);
  if (!pending) return false;
  auto *task = reinterpret_cast<TaskObject *>(task_op);
  // The direct way: only for our task, waiting on exactly this Future, with
  // nothing else running on the loop (a step may not nest in another) and no
  // cancellation to deliver.
  bool direct = task != nullptr && Py_TYPE(task_op) == &RequestTaskType && task->state == TaskState::Pending &&
                task->fut_waiter == future && !task->must_cancel && task->wakeup_cb != nullptr &&
                current_tasks != nullptr && PyDict_GetItemWithError(current_tasks, task->loop) == nullptr &&
                !PyErr_Occurred();
  PyErr_Clear();
  if (direct) {
    PyObject *removed = PyObject_CallMethodOneArg(future, str_remove_done_callback, task->wakeup_cb);
    direct = removed != nullptr && PyLong_Check(removed) && PyLong_AsLong(removed) == 1;
    if (removed == nullptr) PyErr_WriteUnraisable(future);
    Py_XDECREF(removed);
  }
  PyObject *r = PyObject_CallMethodOneArg(future, str_set_result, value);
  if (r == nullptr) PyErr_WriteUnraisable(future);
  Py_XDECREF(r);
  if (direct) {
    Py_INCREF(task);
    task_step(task, nullptr, true);
    Py_DECREF(task);
  }
  return true;
}

bool init_task_type() {
  RequestTaskType.ob_base.ob_base.ob_refcnt = 1;
  RequestTaskType.tp_name = "pronghorn._core.RequestTask";
  RequestTaskType.tp_basicsize = sizeof(TaskObject);
  RequestTaskType.tp_dealloc = task_dealloc;
  RequestTaskType.tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC;
  RequestTaskType.tp_doc = "Runs one request's ASGI coroutine; asyncio.current_task() while it runs.";
  RequestTaskType.tp_traverse = task_traverse;
  RequestTaskType.tp_clear = task_clear;
  RequestTaskType.tp_weaklistoffset = offsetof(TaskObject, weakreflist);
  RequestTaskType.tp_methods = task_methods;
  RequestTaskType.tp_getset = task_getset;
  RequestTaskType.tp_as_async = &task_async;
  RequestTaskType.tp_repr = task_repr;
  if (PyType_Ready(&RequestTaskType) < 0) return false;

  PyObject *asyncio = PyImport_ImportModule("asyncio");
  PyObject *tasks_module = PyImport_ImportModule("asyncio.tasks");
  if (asyncio == nullptr || tasks_module == nullptr) {
    Py_XDECREF(asyncio);
    Py_XDECREF(tasks_module);
    return false;
  }
  cancelled_error_type = PyObject_GetAttrString(asyncio, "CancelledError");
  invalid_state_error_type = PyObject_GetAttrString(asyncio, "InvalidStateError");
  current_tasks = PyObject_GetAttrString(tasks_module, "_current_tasks");
  Py_DECREF(asyncio);
  Py_DECREF(tasks_module);
  if (current_tasks == nullptr) PyErr_Clear();
  str_asyncio_future_blocking = intern("_asyncio_future_blocking");
  str_get_loop = intern("get_loop");
  str_add_done_callback = intern("add_done_callback");
  str_context = intern("context");
  str_call_soon = intern("call_soon");
  str_result = intern("result");
  str_done = intern("done");
  str_set_result = intern("set_result");
  str_remove_done_callback = intern("remove_done_callback");
  str_cancel = intern("cancel");
  str_msg = intern("msg");
  context_kwnames = PyTuple_Pack(1, str_context);
  msg_kwnames = PyTuple_Pack(1, str_msg);
  return cancelled_error_type && invalid_state_error_type && str_asyncio_future_blocking && str_get_loop &&
         str_add_done_callback && str_context && str_call_soon && str_result && str_cancel && str_msg &&
         context_kwnames && msg_kwnames;
}

bool request_tasks_available() {
  // The task registers itself as the loop's current task in asyncio's own
  // table. Check that asyncio.current_task() reads that table (a dict keyed
  // by loop on 3.11-3.13) with a key that is no loop.
  if (current_tasks == nullptr || !PyDict_CheckExact(current_tasks)) return false;
  PyObject *asyncio = PyImport_ImportModule("asyncio");
  PyObject *current_task = asyncio == nullptr ? nullptr : PyObject_GetAttrString(asyncio, "current_task");
  Py_XDECREF(asyncio);
  PyObject *key = PyBaseObject_Type.tp_alloc(&PyBaseObject_Type, 0);
  PyObject *probe = PyBaseObject_Type.tp_alloc(&PyBaseObject_Type, 0);
  bool works = false;
  if (current_task != nullptr && key != nullptr && probe != nullptr && PyDict_SetItem(current_tasks, key, probe) == 0) {
    PyObject *seen = PyObject_CallOneArg(current_task, key);
    works = seen == probe;
    Py_XDECREF(seen);
    if (PyDict_DelItem(current_tasks, key) < 0) works = false;
  }
  PyErr_Clear();
  Py_XDECREF(current_task);
  Py_XDECREF(key);
  Py_XDECREF(probe);
  return works;
}

PyObject *start_request_task(AppServer &server, PyObject *request, PyObject *coro, PyObject *context) {
  auto *self = PyObject_GC_New(TaskObject, &RequestTaskType);
  if (self == nullptr) return nullptr;
  self->weakreflist = nullptr;
  self->loop = Py_NewRef(server.loop);
  self->task_set = Py_NewRef(server.tasks);
  self->request = Py_NewRef(request);
  self->coro = Py_NewRef(coro);
  self->context = context != nullptr ? Py_NewRef(context) : PyContext_CopyCurrent();
  self->fut_waiter = nullptr;
  self->callbacks = nullptr;
  self->exception = nullptr;
  self->cancel_msg = nullptr;
  self->name = nullptr;
  self->step_cb = nullptr;
  self->wakeup_cb = nullptr;
  self->number = ++task_counter;
  self->num_cancels_requested = 0;
  self->state = TaskState::Pending;
  self->must_cancel = false;
  self->blocking = false;
  PyObject_GC_Track(self);
  auto *op = reinterpret_cast<PyObject *>(self);
  if (self->context == nullptr || PySet_Add(server.tasks, op) < 0) {
    Py_DECREF(op);
    return nullptr;
  }
  // Eager start, unless another task is running (a pipelined request that
  // another task's send() made the connection read): that one is stepping
  // now, and this task starts on the next loop pass.
  PyObject *running = PyDict_GetItemWithError(current_tasks, server.loop);
  if (running == nullptr && !PyErr_Occurred()) {
    task_step(self, nullptr, true);
  } else {
    PyErr_Clear();
    schedule_step(self, nullptr);
  }
  return op;
}

}  // namespace pronghorn::bridge
