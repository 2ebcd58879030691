/**
 * The one connection core under every connector: it turns a byte pipe (`Io`) into a `Connection`. Line framing,
 * reply accumulation and their limits, back-pressure, the STARTTLS buffered-bytes refusal and the deadlines all
 * live here, so the live connector (node:net) and the scripted test connector differ only in their `Io`, and the
 * TestClock suites run production's timing and framing code.
 *
 * Deadlines: one timer fiber per connection, on Effect's Clock, forked into the connection's own `Scope` (closed
 * by `close`, which tells the timer to stop first: it ends while the transport is released, and the Scope has no
 * fiber left to interrupt and wait for). Every operation (connect, exchange, TLS handshake, close wait) carries an
 * absolute deadline in Clock milliseconds; at most one is pending at a time. The timer sleeps until the earliest deadline it
 * was asked for; when it wakes it fails the pending operation if that one's deadline has passed, sleeps on when the
 * pending operation's deadline is later (phases usually end well before their deadline, so it rarely wakes), and
 * ends when nothing is pending. An operation whose deadline is earlier than the timer's target restarts it
 * (the old one is interrupted: Effect's Clock offers no other way to wake a sleep early, so a restart is a fork).
 * A timer started sleeps at most `FIRST_WAKE_MS` before it looks at the pending operation's deadline: the deadlines
 * shorter than the connect's (QUIT's 2 s, the 200 ms wait for the close after it) come at the end of a session,
 * which on a fast path ends before that first wake, so they find the timer due earlier than them and restart
 * nothing. Measured (bench session stage): a restart costs ~25 run-loop steps, ~22 KB and ~30 µs; a session on
 * loopback forks the timer once, a slow one (past 200 ms) at most twice, plus one wake that sleeps on.
 *
 * @internal
 */
import type * as Clock from "effect/Clock"
import * as Duration from "effect/Duration"
import * as Effect from "effect/Effect"
import * as Exit from "effect/Exit"
import * as Fiber from "effect/Fiber"
import * as Scope from "effect/Scope"
import type {
  ConnectOptions,
  Connection,
  Exchange,
  Io,
  IoEvents,
  Open,
  StartTlsOptions,
  TlsInfo
} from "../../Connector.js"
import * as SmtpReply from "../../SmtpReply.js"
import { verify } from "../dane/verify.js"
import { LineBuffer } from "../lineBuffer.js"
import { closedByPeer, closedLocally, deadlinePassed, lineTooLong, SocketError } from "./socketError.js"

/**
 * Kept high enough that the pause never bites a well-behaved server, and bounded so that a server that floods
 * cannot make the client buffer without end while nobody reads.
 *
 * @internal
 */
export const HIGH_WATER_MARK = 64 * 1024

/**
 * The longest first sleep of a timer: the shortest deadline the session asks for (the wait for the close after
 * QUIT), so that a session that ends within it restarts no timer.
 *
 * @internal
 */
export const FIRST_WAKE_MS = 200

/** What the timer fails when its deadline passes. */
interface Op {
  readonly deadline: number
  /** Input arrived or ended. */
  progress(): void
  /** The deadline passed. */
  expire(): void
  /** The connection is being closed under it. */
  abandon(error: SocketError): void
}

type Resume<A> = (effect: Effect.Effect<A, SocketError>) => void

const busy = () => new SocketError({ kind: "protocol", message: "another operation is in progress on the connection" })

/** @internal */
export class Wire implements Connection, IoEvents {
  readonly lines = new LineBuffer<SocketError>(SmtpReply.MAX_LINE, lineTooLong)
  readonly accumulator = new SmtpReply.Accumulator()
  io: Io | null = null
  op: Op | null = null
  localAddress: string | null = null
  tls: TlsInfo | null = null
  private paused = false
  private closing = false
  private released = false
  private readonly onReleased: Array<() => void> = []
  private timerAt = Infinity
  /**
   * The deadline of an operation about to be registered (between `timed` and its `Effect.async`, where the fiber may
   * yield): a timer that wakes before the operation is there sleeps on to it rather than stopping.
   */
  private expected = Infinity
  private timerGen = 0
  private timer: Fiber.RuntimeFiber<void> | null = null
  /** The Clock the connect ran on, the timer's: an operation registered after its deadline fails on it at once. */
  private clock: Clock.Clock | null = null

  constructor(
    readonly remoteAddress: string,
    readonly remotePort: number,
    private readonly scope: Scope.CloseableScope
  ) {}

  get isTls(): boolean {
    return this.tls !== null
  }

  get buffered(): number {
    return this.lines.size + (this.io?.readableLength ?? 0)
  }

  // IoEvents ------------------------------------------------------------------------------------------------------

  readonly data = (chunk: Uint8Array): void => {
    this.lines.push(chunk)
    if (this.lines.size >= HIGH_WATER_MARK && !this.paused && this.io !== null) {
      this.paused = true
      this.io.pause()
    }
    this.op?.progress()
  }

  readonly end = (error?: SocketError): void => {
    // Every connection ends so (the 'end' and the 'close' of a socket both say it): the error is built only if read.
    if (error === undefined) this.lines.endLazily(closedByPeer)
    else this.lines.end(error)
    this.op?.progress()
  }

  readonly reset = (error: SocketError): void => {
    this.lines.abort(error)
    this.op?.progress()
  }

  /** A read is waiting: let the bytes in again. */
  resumeInput(): void {
    if (this.paused && this.io !== null) {
      this.paused = false
      this.io.resume()
    }
  }

  // Deadlines -----------------------------------------------------------------------------------------------------

  /** `effect`, with the timer armed for `deadline` unless it already wakes by then. */
  timed<A>(deadline: number, effect: Effect.Effect<A, SocketError>): Effect.Effect<A, SocketError> {
    return Effect.clockWith((clock) => {
      if (this.closing) return effect
      if (deadline < this.expected) this.expected = deadline
      if (!(deadline < this.timerAt)) return effect
      // Uninterruptible from the state change to the fork: an interruption in between would leave the state saying
      // a timer is armed when none is.
      return Effect.zipRight(Effect.uninterruptible(Effect.suspend(() => this.arm(deadline, clock))), effect)
    })
  }

  /** A timer waking by `deadline` (at most `FIRST_WAKE_MS` from now), in place of one that wakes later. */
  private arm(deadline: number, clock: Clock.Clock): Effect.Effect<void> {
    if (!(deadline < this.timerAt) || this.closing) return Effect.void
    const start = this.fork(deadline, clock, Effect.void)
    const old = this.timer
    this.timer = null
    // A timer waking later than this deadline is replaced (it would find itself stale when it woke anyway).
    return old === null ? start : Effect.zipRight(Effect.fiberIdWith((id) => Fiber.interruptAsFork(old, id)), start)
  }

  /**
   * Forks the timer for `deadline`, then goes on with `next`; for a caller in an uninterruptible region from this
   * call to the fork (the state it sets says a timer is armed).
   */
  private fork<A, E>(deadline: number, clock: Clock.Clock, next: Effect.Effect<A, E>): Effect.Effect<A, E> {
    this.timerAt = Math.min(deadline, clock.unsafeCurrentTimeMillis() + FIRST_WAKE_MS)
    const gen = ++this.timerGen
    // The timer lives in the connection's Scope (closed by `close`); `forkIn` registers it there without capturing
    // the caller's FiberRefs, which a finalizer run by another fiber would leave in that fiber. It is interruptible
    // whatever region it was started from (a connect runs uninterruptibly outside its wait): otherwise closing the
    // connection would wait for its sleep to end.
    return Effect.flatMap(Effect.forkIn(Effect.interruptible(this.sleep(gen, clock)), this.scope), (fiber) => {
      if (gen === this.timerGen) this.timer = fiber
      return next
    })
  }

  /**
   * The timer's loop, on the Clock the caller read. Each sleep's length is read when it starts, in the timer's fiber:
   * a fiber starts some time after its fork.
   */
  private sleep(gen: number, clock: Clock.Clock): Effect.Effect<void> {
    const loop = (): Effect.Effect<void> =>
      Effect.flatMap(clock.sleep(Duration.millis(Math.max(0, this.timerAt - clock.unsafeCurrentTimeMillis()))), () => {
        // Replaced by a timer with an earlier target: that one owns the state now.
        if (gen !== this.timerGen) return Effect.void
        const now = clock.unsafeCurrentTimeMillis()
        if (this.op !== null && this.op.deadline <= now) this.op.expire()
        // An operation expected but not registered yet, whose deadline has passed, never came (interrupted).
        if (this.op === null && this.expected <= now) this.expected = Infinity
        const next = this.op?.deadline ?? this.expected
        if (now < next && next < Infinity) {
          this.timerAt = next
          return loop()
        }
        this.timerAt = Infinity
        this.timer = null
        return Effect.void
      })
    return Effect.suspend(loop)
  }

  /** Runs `op` as the pending operation: `start` returns `true` when it completed at once. */
  pending<A>(
    deadline: number,
    make: (resume: Resume<A>) => BaseOp<A>
  ): Effect.Effect<A, SocketError> {
    return this.timed(
      deadline,
      Effect.async<A, SocketError>((resume) => {
        if (this.closing) return resume(Effect.fail(closedLocally()))
        if (this.op !== null) return resume(Effect.fail(busy()))
        // Registered after its deadline (the fiber was descheduled since `timed` for that long): the timer may have
        // ended meanwhile, having seen nothing pending, and nothing would expire the operation.
        if (this.clock !== null && deadline <= this.clock.unsafeCurrentTimeMillis()) {
          this.expected = Infinity
          return resume(Effect.fail(deadlinePassed()))
        }
        const op = make(resume)
        this.op = op
        this.expected = Infinity
        op.start()
        // A canceler costs every operation an interruption handler (an uninterruptible region and an exit match,
        // about six run-loop steps): only an operation that holds something gets one. An exchange interrupted stays
        // the pending operation, ended by its deadline or by `close`, which the owner runs: its replies would
        // arrive unread and desynchronise the dialogue anyway.
        if (op.done || !op.holds) return
        return Effect.sync(() => op.cancel())
      })
    )
  }

  // Connection ----------------------------------------------------------------------------------------------------

  exchange(request: Exchange): Effect.Effect<ReadonlyArray<SmtpReply.Reply>, SocketError> {
    return Effect.clockWith((clock) => this.begin(clock, new PlainExchange(this, request)))
  }

  exchangeEither<B>(
    request: Exchange,
    onFailure: (error: SocketError) => B,
    onSuccess: (replies: ReadonlyArray<SmtpReply.Reply>) => B
  ): Effect.Effect<B> {
    // The outcome mapped where the exchange completes, without the frame and the step a `matchEffect` around the
    // exchange would add.
    return Effect.clockWith((clock) => this.begin(clock, new EitherExchange(this, request, onFailure, onSuccess)))
  }

  /**
   * `exchangeEither`, started now, in the caller's step: the caller is the fiber that runs the returned effect at once
   * (the transaction's continuations, each run in the step that gives it). An exchange whose replies are buffered
   * (RCPT's and DATA's under PIPELINING) is then a value, taken without a step, where the lazy `exchangeEither`
   * costs three (its start, its value, the continuation).
   */
  exchangeEitherNow<B>(
    clock: Clock.Clock,
    request: Exchange,
    onFailure: (error: SocketError) => B,
    onSuccess: (replies: ReadonlyArray<SmtpReply.Reply>) => B
  ): Effect.Effect<B> {
    return this.begin(clock, new EitherExchange(this, request, onFailure, onSuccess))
  }

  /**
   * `exchangeEitherNow` and its continuation: where the exchange waits for the server (MAIL's reply, the
   * end-of-data reply), the fiber resumes with the continuation's effect (one step) rather than with the value and
   * then the continuation (two).
   */
  exchangeThenNow<B, E>(
    clock: Clock.Clock,
    request: Exchange,
    onFailure: (error: SocketError) => Effect.Effect<B, E>,
    onSuccess: (replies: ReadonlyArray<SmtpReply.Reply>) => Effect.Effect<B, E>
  ): Effect.Effect<B, E> {
    return this.begin(clock, new ThenExchange(this, request, onFailure, onSuccess))
  }

  /** Starts the exchange in this step: its outcome at once when it completed, else the wait for it. */
  private begin<B, E>(clock: Clock.Clock, op: ExchangeOp<B, E>): Effect.Effect<B, E> {
    if (this.closing) return op.failed(closedLocally())
    if (this.op !== null) return op.failed(busy())
    // Started in this step: under PIPELINING the replies to RCPT and DATA are mostly buffered already (they came
    // with MAIL's), and an exchange that completes at once needs neither a timer nor an async step. An exchange
    // holds nothing (no canceler), and one interrupted before its async registration stays the pending operation,
    // ended by `close`, which its owner runs on interruption (or by its deadline, when the interruption came after
    // the timer was armed), as one interrupted while waiting is.
    this.op = op
    this.expected = Infinity
    op.start()
    if (op.result !== null) return op.result
    const wait = Effect.async<B, E>((resume) => {
      if (op.result !== null) return resume(op.result)
      op.waiting = resume
    })
    // The timer, armed unless it already wakes by the deadline (the operation is registered: no `expected`).
    const deadline = op.deadline
    if (!(deadline < this.timerAt)) return wait
    return Effect.zipRight(Effect.uninterruptible(Effect.suspend(() => this.arm(deadline, clock))), wait)
  }

  startTls(options: StartTlsOptions, deadline: number): Effect.Effect<TlsInfo, SocketError> {
    return this.pending(deadline, (resume) => new TlsOp(this, options, deadline, resume))
  }

  awaitClose(options: { readonly deadline: number; readonly maxLines: number }): Effect.Effect<void, SocketError> {
    return this.pending(options.deadline, (resume) => new CloseWaitOp(this, options, resume))
  }

  readonly close: Effect.Effect<void> = Effect.withFiberRuntime((fiber) => {
    if (!this.closing) {
      this.closing = true
      const op = this.op
      this.op = null
      op?.abandon(closedLocally())
      this.lines.abortLazily(closedLocally)
    }
    const timer = this.timer
    if (timer === null) return this.release
    this.timer = null
    // Told to stop now, the timer ends while the transport is released, and the Scope, when it closes, has no fiber
    // left to interrupt and wait for (it does both for a timer still running then).
    return Effect.zipRight(Fiber.interruptAsFork(timer, fiber.id()), this.release)
  })

  /**
   * Destroys the transport, waits until its resource is released, then closes the Scope: the fiber resumes with the
   * Scope's close rather than with a value and then a continuation.
   */
  private readonly release: Effect.Effect<void> = Effect.async<void>((resume) => {
    const closeScope = Scope.close(this.scope, Exit.void)
    if (this.released || this.io === null) return resume(closeScope)
    this.onReleased.push(() => resume(closeScope))
    if (this.onReleased.length > 1) return
    this.io.destroy(() => {
      this.released = true
      for (const f of this.onReleased.splice(0)) f()
    })
  })

  /**
   * Connects `io` under `deadline`. Run uninterruptibly (by `connect` below) up to the wait, which `restore` makes
   * interruptible: the timer is forked in the same region as the state that says it is armed. Whatever ends the
   * connect other than success is the caller's to clean up (`close`), an interruption of the wait included: the
   * wait holds nothing `close` does not release, so it needs no canceler of its own.
   */
  connect(
    io: Io,
    deadline: number,
    clock: Clock.Clock,
    restore: <A, E, R>(effect: Effect.Effect<A, E, R>) => Effect.Effect<A, E, R>
  ): Effect.Effect<Connection, SocketError> {
    this.io = io
    this.clock = clock
    // Expected before the timer is forked, as `timed` does: a timer that wakes before the wait registers (the fiber
    // may be descheduled in between) sleeps on to the deadline instead of ending with nothing pending.
    if (deadline < this.expected) this.expected = deadline
    const wait = restore(Effect.async<Connection, SocketError>((resume) => {
      let done = false
      const fail = (error: SocketError) => {
        if (done) return
        done = true
        this.op = null
        resume(Effect.fail(error))
      }
      // Registered after its deadline: see `pending`.
      if (deadline <= clock.unsafeCurrentTimeMillis()) {
        this.expected = Infinity
        return fail(deadlinePassed())
      }
      this.op = { deadline, progress() {}, expire: () => fail(deadlinePassed()), abandon: fail }
      this.expected = Infinity
      io.connect((error) => {
        if (done) return
        if (error !== null) return fail(error)
        done = true
        this.op = null
        this.localAddress = io.localAddress
        resume(Effect.succeed(this))
      })
    }))
    return deadline < this.timerAt ? this.fork(deadline, clock, wait) : wait
  }
}

abstract class BaseOp<A> implements Op {
  done = false
  /** Holds a resource that interruption must let go of at once. */
  get holds(): boolean {
    return false
  }
  constructor(readonly wire: Wire, readonly deadline: number, private readonly resume: Resume<A>) {}
  abstract start(): void
  abstract progress(): void
  /** Lets go of what the operation holds (a handshake in flight); bytes read so far stay buffered. */
  cleanup(): void {}
  finish(effect: Effect.Effect<A, SocketError>): void {
    if (this.done) return
    this.done = true
    if (this.wire.op === this) this.wire.op = null
    this.resume(effect)
  }
  expire(): void {
    this.abandon(deadlinePassed())
  }
  abandon(error: SocketError): void {
    if (this.done) return
    this.cleanup()
    this.finish(Effect.fail(error))
  }
  /** Interrupted. */
  cancel(): void {
    if (this.done) return
    this.done = true
    if (this.wire.op === this) this.wire.op = null
    this.cleanup()
  }
}

/**
 * Writes, then reads `replies` complete replies. Its outcome is handed over where it completes: kept in `result`
 * when the exchange completed in the step that started it, else given to `waiting`. The two ways it ends
 * (`failed`, `succeeded`) are the subclass's, so that an outcome mapped to a value (`exchangeEither`) takes no
 * closure nor intermediate exit.
 */
abstract class ExchangeOp<B, E> implements Op {
  readonly deadline: number
  done = false
  result: Effect.Effect<B, E> | null = null
  waiting: ((effect: Effect.Effect<B, E>) => void) | null = null
  /** Sized for every reply asked for (a `[]` grown by its first push takes room for seventeen). */
  private readonly replies: Array<SmtpReply.Reply>
  private count = 0
  private flushed = true

  constructor(readonly wire: Wire, private readonly request: Exchange) {
    this.deadline = request.deadline
    // `Exchange.replies` is a public field: a count that is no positive integer gets what the loop below reads.
    const wanted = request.replies > 0 ? Math.ceil(request.replies) : 0
    this.replies = Number.isSafeInteger(wanted) ? new Array(wanted) : []
  }

  abstract failed(error: SocketError): Effect.Effect<B, E>
  abstract succeeded(replies: ReadonlyArray<SmtpReply.Reply>): Effect.Effect<B, E>

  start(): void {
    const { write } = this.request
    if (write !== undefined && this.wire.io !== null) {
      this.flushed = false
      let sync = true
      // Below the transport's high-water mark it has taken the bytes: go on at once. Above it, an exchange that
      // reads nothing waits for the flush, so a peer that stops reading holds the phase, under its deadline.
      const accepted = this.wire.io.write(write, (error) => {
        if (error !== null) {
          this.wire.end(error)
          if (this.request.replies === 0) return this.abandon(error)
        }
        this.flushed = true
        if (!sync) this.progress()
      })
      sync = false
      if (accepted) this.flushed = true
      if (this.done) return
    }
    this.progress()
  }

  progress(): void {
    if (this.done) return
    const { lines, accumulator } = this.wire
    const wanted = this.request.replies
    while (this.count < wanted) {
      const line = lines.nextLine()
      if (line === null) {
        const ended = lines.error
        if (ended !== null) return this.abandon(ended)
        break
      }
      const pushed = accumulator.add(line)
      if (typeof pushed === "string") {
        // The stream cannot be resynchronised after a malformed reply.
        const error = new SocketError({ kind: "protocol", message: pushed })
        lines.abort(error)
        return this.abandon(error)
      }
      if (pushed !== null) this.replies[this.count++] = pushed
    }
    if (this.count < wanted) return this.wire.resumeInput()
    if (this.flushed) this.finish(this.succeeded(this.replies))
  }

  expire(): void {
    this.abandon(deadlinePassed())
  }

  abandon(error: SocketError): void {
    if (!this.done) this.finish(this.failed(error))
  }

  private finish(outcome: Effect.Effect<B, E>): void {
    this.done = true
    if (this.wire.op === this) this.wire.op = null
    if (this.waiting !== null) this.waiting(outcome)
    else this.result = outcome
  }
}

/** `exchange`: the replies, or the socket's error. */
class PlainExchange extends ExchangeOp<ReadonlyArray<SmtpReply.Reply>, SocketError> {
  failed(error: SocketError): Effect.Effect<ReadonlyArray<SmtpReply.Reply>, SocketError> {
    return Effect.fail(error)
  }
  succeeded(replies: ReadonlyArray<SmtpReply.Reply>): Effect.Effect<ReadonlyArray<SmtpReply.Reply>, SocketError> {
    return Effect.succeed(replies)
  }
}

/** `exchangeEither`: either way, a value. */
class EitherExchange<B> extends ExchangeOp<B, never> {
  constructor(
    wire: Wire,
    request: Exchange,
    private readonly onFailure: (error: SocketError) => B,
    private readonly onSuccess: (replies: ReadonlyArray<SmtpReply.Reply>) => B
  ) {
    super(wire, request)
  }
  failed(error: SocketError): Effect.Effect<B> {
    return Effect.succeed(this.onFailure(error))
  }
  succeeded(replies: ReadonlyArray<SmtpReply.Reply>): Effect.Effect<B> {
    return Effect.succeed(this.onSuccess(replies))
  }
}

/**
 * `exchangeThenNow`: the continuation's effect, suspended (the exchange may complete in a socket's callback, and the
 * continuation runs in the fiber).
 */
class ThenExchange<B, E> extends ExchangeOp<B, E> {
  constructor(
    wire: Wire,
    request: Exchange,
    private readonly onFailure: (error: SocketError) => Effect.Effect<B, E>,
    private readonly onSuccess: (replies: ReadonlyArray<SmtpReply.Reply>) => Effect.Effect<B, E>
  ) {
    super(wire, request)
  }
  failed(error: SocketError): Effect.Effect<B, E> {
    return Effect.suspend(() => this.onFailure(error))
  }
  succeeded(replies: ReadonlyArray<SmtpReply.Reply>): Effect.Effect<B, E> {
    return Effect.suspend(() => this.onSuccess(replies))
  }
}

/** The in-place TLS upgrade. */
class TlsOp extends BaseOp<TlsInfo> {
  private stop: (() => void) | null = null

  constructor(wire: Wire, private readonly options: StartTlsOptions, deadline: number, resume: Resume<TlsInfo>) {
    super(wire, deadline, resume)
  }

  start(): void {
    const wire = this.wire
    const io = wire.io!
    if (wire.tls !== null) return this.finish(Effect.fail(new SocketError({ kind: "protocol", message: "TLS is already active" })))
    // CVE-2011-0411: bytes after the reply to STARTTLS would otherwise be read as if they came over TLS.
    const early = wire.lines.size + io.readableLength
    if (early > 0) {
      const error = new SocketError({
        kind: "protocol",
        message: `the server sent ${early} bytes after its reply to STARTTLS`
      })
      wire.lines.abort(error)
      return this.finish(Effect.fail(error))
    }
    const ended = wire.lines.error
    if (ended !== null) return this.finish(Effect.fail(ended))
    this.stop = io.upgrade(this.options, (result) => {
      if (this.done) return
      this.stop = null
      if (result instanceof SocketError) {
        wire.lines.abort(result)
        return this.finish(Effect.fail(result))
      }
      // DANE: the chain is matched here, once, so the outcome is part of the connection's TLS state
      const dane = this.options.dane
      const info = dane === undefined
        ? result
        : { ...result, dane: verify(result.peerCertificates, dane.records, dane.names, dane.nowMs) }
      wire.tls = info
      this.finish(Effect.succeed(info))
    })
  }

  progress(): void {
    const ended = this.wire.lines.error
    if (!this.done && ended !== null) this.abandon(ended)
  }

  override get holds(): boolean {
    return true
  }

  override cleanup(): void {
    const stop = this.stop
    this.stop = null
    if (stop !== null) {
      stop()
      this.wire.lines.abort(new SocketError({ kind: "tls", message: "TLS handshake interrupted" }))
    }
  }
}

/** Reads and drops lines until the peer closes, at most `maxLines`. */
class CloseWaitOp extends BaseOp<void> {
  private seen = 0

  constructor(wire: Wire, private readonly options: { readonly deadline: number; readonly maxLines: number }, resume: Resume<void>) {
    super(wire, options.deadline, resume)
  }

  start(): void {
    this.progress()
  }

  progress(): void {
    const lines = this.wire.lines
    while (!this.done) {
      if (lines.nextLine() === null) {
        // The peer's close is what this waits for: its error need not be built.
        if (lines.endedLazilyBy(closedByPeer)) return this.finish(Effect.void)
        const ended = lines.error
        if (ended === null) return this.wire.resumeInput()
        return this.finish(ended.kind === "closed" ? Effect.void : Effect.fail(ended))
      }
      if (++this.seen >= this.options.maxLines) return this.finish(Effect.void)
    }
  }
}

/**
 * A connector's `connect` from its `open`: the connection gets its own Scope and deadline timer, the pipe is
 * opened (an `open` failure fails the connect), then connected under `options.deadline`. Interruption, failure and
 * timeout all release the pipe before the connect returns.
 *
 * @internal
 */
export const connect = (open: Open) => (options: ConnectOptions): Effect.Effect<Connection, SocketError> =>
  // Interruptible only inside `open` and the wait for the connect: the pipe `open` returns is the wire's before
  // anything can interrupt, and whatever ends the connect other than success (a failure, the deadline, an
  // interruption at any point, `open`'s included) closes the wire, its pipe and its Scope before the connect returns.
  // One region for all of it, and a failure handler rather than `onExit`: a success passes through no frame.
  Effect.clockWith((clock) =>
    Effect.uninterruptibleMask((restore) =>
      Effect.flatMap(Scope.make(), (scope) => {
        const wire = new Wire(options.ip, options.port, scope)
        // The connection goes out through `restore`: an interruption that came while the connect succeeded fires
        // there, inside this region, and closes it, rather than at the region's end, where it would drop it.
        return Effect.catchAllCause(
          Effect.flatMap(
            restore(open(options, wire, scope)),
            (io) =>
              Effect.flatMap(
                wire.connect(io, options.deadline, clock, restore),
                (connection) => restore(Effect.succeed(connection))
              )
          ),
          (cause) => Effect.zipRight(wire.close, Effect.failCause(cause))
        )
      })
    )
  )
