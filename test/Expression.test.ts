import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import * as fc from "effect/FastCheck"
import * as Expression from "../src/Expression.js"
import { Constant, type Value } from "../src/Expression.js"
import { compileSource, run } from "../src/internal/expression/compile.js"
import { parse } from "../src/internal/expression/parser.js"
import { CONSTANT_NAMES } from "../src/internal/expression/value.js"
import { show } from "./utils/expression.js"
import { RUNS } from "./utils/properties.js"

const compiled = (source: string, options?: Expression.CompileOptions): Expression.Expression => {
  const result = Expression.compile(source, options)
  if (Either.isLeft(result)) throw new Error(source + ": " + result.left.message + " at " + result.left.column)
  return result.right
}

const ev = (source: string, vars: Expression.Variables = {}, options?: Expression.CompileOptions): Value =>
  compiled(source, options).evaluate(vars)

const failure = (source: string): { readonly message: string; readonly column: number } => {
  const result = Expression.compile(source)
  if (Either.isRight(result)) throw new Error(source + ": compiled, expected an error")
  expect(result.left._tag).toBe("ExpressionError")
  expect(result.left.source).toBe(source)
  return { message: result.left.message, column: result.left.column }
}

const tree = (source: string): string => show(parse(source).node)

describe("Expression", () => {
  describe("precedence and associativity", () => {
    it("parses priority = -1 || starts_with(rcpt, 'jane') as (priority == -1) || starts_with(…)", () => {
      const source = "priority = -1 || starts_with(rcpt, 'jane')"
      expect(tree(source)).toBe("((priority == (-1)) || starts_with(rcpt, 'jane'))")
      const expr = compiled(source)
      expect([...expr.variables].sort()).toEqual(["priority", "rcpt"])
      // First operand decides; Stalwart keeps its value, the integer 1 of `==`.
      expect(expr.evaluate({ priority: -1, rcpt: "bob@example.org" })).toBe(1)
      expect(expr.evaluate({ priority: "-1", rcpt: "bob@example.org" })).toBe(1)
      // Second operand decides.
      expect(expr.evaluate({ priority: 0, rcpt: "jane@example.org" })).toBe(1)
      // Neither.
      expect(expr.evaluate({ priority: 0, rcpt: "bob@example.org" })).toBe(0)
      expect(expr.evaluate({ priority: 1, rcpt: "ja" })).toBe(0)
    })

    it("orders the levels * / > + - > comparisons > equality > ^ > && > ||", () => {
      expect(tree("retry_num || priority && mx ^ rcpt == sender > 1 + 2 * 3"))
        .toBe("(retry_num || (priority && (mx ^ (rcpt == (sender > (1 + (2 * 3)))))))")
      expect(tree("1 * 2 + 3 > 4 == 5 ^ 6 && 7 || 8")).toBe("(((((((1 * 2) + 3) > 4) == 5) ^ 6) && 7) || 8)")
      expect(tree("8 / 4 - 1 <= 2 != 0")).toBe("((((8 / 4) - 1) <= 2) != 0)")
    })

    it("is left-associative at every level", () => {
      expect(tree("1 - 2 + 3")).toBe("((1 - 2) + 3)")
      expect(tree("8 / 4 * 2")).toBe("((8 / 4) * 2)")
      expect(tree("1 < 2 > 0")).toBe("((1 < 2) > 0)")
      expect(tree("1 == 2 != 3")).toBe("((1 == 2) != 3)")
      expect(ev("10 - 4 - 3")).toBe(3)
      expect(ev("8 / 4 / 2")).toBe(1)
      expect(ev("2 == 2 == 2")).toBe(0)
      expect(ev("1 == 1 == 1")).toBe(1)
    })

    it("gives values that only the documented precedence explains", () => {
      expect(ev("2 + 3 * 4")).toBe(14)
      expect(ev("(2 + 3) * 4")).toBe(20)
      expect(ev("3 > 2 * 2")).toBe(0)
      expect(ev("1 + 2 > 3")).toBe(0)
      expect(ev("1 < 2 == 1")).toBe(1)
      expect(ev("2 == 2 ^ 0")).toBe(1)
      expect(ev("1 ^ 1 && 0")).toBe(0)
      expect(ev("1 || 0 && 0")).toBe(1)
    })

    it("binds unary ! and - tighter than any binary operator, looser than indexing", () => {
      expect(tree("!retry_num == 0")).toBe("((!retry_num) == 0)")
      expect(tree("-recipients[0] * 2")).toBe("((-recipients[0]) * 2)")
      expect(ev("!0 + 1")).toBe(2)
      expect(ev("-2 * 3")).toBe(-6)
      expect(ev("- 2 - 3")).toBe(-5)
      expect(ev("--2")).toBe(2)
      expect(ev("-'5'")).toBe(-5)
      expect(ev("-'x'")).toBe(0)
    })

    it("reads the operator aliases = => =< & |", () => {
      expect(tree("retry_num = 1")).toBe("(retry_num == 1)")
      expect(tree("retry_num => 1")).toBe("(retry_num >= 1)")
      expect(tree("retry_num =< 1")).toBe("(retry_num <= 1)")
      expect(tree("retry_num & mx | rcpt")).toBe("((retry_num && mx) || rcpt)")
    })

    it("the = quirk: a single = is equality and keeps the next character (current Stalwart, not v0.12)", () => {
      expect(ev("retry_num = 0", { retry_num: 0 })).toBe(1)
      expect(ev("retry_num=0", { retry_num: 0 })).toBe(1)
      // Stalwart ≤ v0.12 swallowed the "1" and compared against 0.
      expect(ev("retry_num =10", { retry_num: 10 })).toBe(1)
      expect(ev("retry_num =10", { retry_num: 0 })).toBe(0)
      expect(ev("rcpt='a'", { rcpt: "a" })).toBe(1)
      expect(tree("retry_num=>1")).toBe("(retry_num >= 1)")
      expect(tree("retry_num=<1")).toBe("(retry_num <= 1)")
      expect(failure("retry_num = = 1")).toEqual({ message: "expected a value, found '=='", column: 13 })
    })
  })

  describe("operators", () => {
    it("+ adds numbers, concatenates text and arrays, and treats constants and '' as identities", () => {
      expect(ev("1 + 2")).toBe(3)
      expect(ev("1.5 + 1")).toBe(2.5)
      expect(ev("'a' + 'b'")).toBe("ab")
      expect(ev("'n=' + 5")).toBe("n=5")
      expect(ev("5 + 'x'")).toBe("5x")
      expect(ev("'' + 5")).toBe(5)
      expect(ev("5 + ''")).toBe(5)
      expect(ev("'' + ''")).toBe("")
      expect(ev("[1] + [2]")).toEqual([1, 2])
      expect(ev("[1] + 2")).toEqual([1, 2])
      expect(ev("0 + [1]")).toEqual([0, 1])
      expect(ev("'a' + [1]")).toEqual(["a", 1])
      expect(ev("'x' + ipv4_only")).toBe("xipv4_only")
      expect(ev("ipv4_only + 'x'")).toBe("ipv4_onlyx")
      expect(ev("2 + ipv4_only")).toBe(2)
      expect(ev("ipv4_only + 2")).toBe(2)
      expect(ev("'' + ipv6_only")).toEqual(new Constant("ipv6_only"))
      expect(ev("'t=' + 7 / 2")).toBe("t=3.5")
      // Numbers print as Rust prints them: no exponent, `inf`.
      expect(ev("'x' + 10000000000 * 100000000000")).toBe("x1000000000000000000000")
      expect(ev("'x' + 1 / 10000000")).toBe("x0.0000001")
      expect(ev("'x' + 'inf' * 1")).toBe("xinf")
      expect(ev("'x' + 'nan' * 1")).toBe("xNaN")
    })

    it("- subtracts numbers (parsing text) and removes items from arrays", () => {
      expect(ev("'10' - 4")).toBe(6)
      expect(ev("'5' - '2'")).toBe(3)
      expect(ev("1.5 - 2")).toBe(-0.5)
      expect(ev("[1, 2, 1] - 1")).toEqual([2])
      expect(ev("1 - [1, 2]")).toEqual([2])
      expect(ev("[1, 2] - [1]")).toEqual([1, 2])
      expect(ev("'x' - 1")).toBe(-1)
    })

    it("* multiplies numerically and / always divides as floats, with /0 giving 0", () => {
      expect(ev("'6' * '7'")).toBe(42)
      expect(ev("'abc' * 2")).toBe(0)
      expect(ev("[] * 3")).toBe(3)
      expect(ev("7 / 2")).toBe(3.5)
      expect(ev("5 / 0")).toBe(0)
      expect(ev("5.5 / 0.0")).toBe(0)
      expect(ev("'9' / '3'")).toBe(3)
    })

    it("== and != compare numbers with text numerically, never equal a constant", () => {
      expect(ev("1 == 1.0")).toBe(1)
      expect(ev("'1' == 1")).toBe(1)
      expect(ev("1 == '1.0'")).toBe(1)
      expect(ev("'' == 0")).toBe(1)
      expect(ev("'a' == 'A'")).toBe(0)
      expect(ev("'abc' != 'abd'")).toBe(1)
      expect(ev("[1, 'a'] == [1, 'a']")).toBe(1)
      expect(ev("[1, 'a'] == [1, 'b']")).toBe(0)
      expect(ev("[1] == 1")).toBe(0)
      expect(ev("ipv4_only == ipv4_only")).toBe(0)
      expect(ev("ipv4_only != ipv4_only")).toBe(1)
      expect(ev("'nan' == 'nan'")).toBe(1)
      expect(ev("'nan' == 0 / 0 + 'nan' * 1")).toBe(0)
    })

    it("orders numbers, text, arrays and constants as Stalwart does", () => {
      expect(ev("5 > 3")).toBe(1)
      expect(ev("3 >= 3")).toBe(1)
      expect(ev("3 => 4")).toBe(0)
      expect(ev("2 < 3")).toBe(1)
      expect(ev("3 <= 3")).toBe(1)
      expect(ev("4 =< 3")).toBe(0)
      expect(ev("'abc' < 'abd'")).toBe(1)
      expect(ev("'b' > 'a'")).toBe(1)
      expect(ev("'10' > 9")).toBe(1)
      expect(ev("'10' > '9'")).toBe(0)
      expect(ev("[1, 2] < [1, 3]")).toBe(1)
      expect(ev("[1] < [1, 0]")).toBe(1)
      expect(ev("'x' > [1]")).toBe(1)
      expect(ev("[1] > 'x'")).toBe(1)
      expect(ev("ipv4_only < ipv6_only")).toBe(1)
      expect(ev("ipv4_only <= ipv4_only")).toBe(1)
      expect(ev("5 < ipv4_only")).toBe(1)
      expect(ev("ipv4_only < 5")).toBe(1)
      expect(ev("'nan' < 1")).toBe(0)
      expect(ev("'nan' >= 1")).toBe(0)
      // Code-point order, as Rust's byte order of UTF-8: U+1F600 sorts after U+FF61.
      expect(ev("'\u{1F600}' > '\uFF61'")).toBe(1)
    })

    it("^ is a boolean xor", () => {
      expect(ev("1 ^ 1")).toBe(0)
      expect(ev("1 ^ 0")).toBe(1)
      expect(ev("'a' ^ ''")).toBe(1)
      expect(ev("[] ^ ''")).toBe(0)
    })

    it("! negates truthiness", () => {
      expect(ev("!0")).toBe(1)
      expect(ev("!''")).toBe(1)
      expect(ev("!'a'")).toBe(0)
      expect(ev("![]")).toBe(1)
      expect(ev("!ipv4_only")).toBe(0)
      expect(ev("!!5")).toBe(1)
      expect(ev("!0.0")).toBe(1)
    })

    it("short-circuits and keeps the deciding left value (the quirk)", () => {
      expect(ev("'a' || rcpt", { rcpt: "r" })).toBe("a")
      expect(ev("0 || 'b'")).toBe(1)
      expect(ev("0 || ''")).toBe(0)
      expect(ev("'' || 0")).toBe(0)
      expect(ev("'' && 'x'")).toBe("")
      expect(ev("0 && rcpt", { rcpt: "r" })).toBe(0)
      expect(ev("'x' && 'y'")).toBe(1)
      expect(ev("'x' && ''")).toBe(0)
      expect(ev("[] || [1]")).toBe(1)
      expect(ev("'a' || 'b' || 'c'")).toBe("a")
      expect(ev("0 || 0 || 'c'")).toBe(1)
      expect(ev("'a' && 'b' && 'c'")).toBe(1)
      expect(ev("'' && 'b' && 'c'")).toBe("")
      // The right side is not evaluated at all: its matches() leaves no captures behind.
      expect(ev("(1 || matches('(.)', 'z')) && $1 == ''")).toBe(1)
      expect(ev("(0 || matches('(.)', 'z')) && $1 == 'z'")).toBe(1)
      expect(ev("(0 && matches('(.)', 'z')) || $1 == ''")).toBe(1)
    })
  })

  describe("literals", () => {
    it("reads strings in either quotes with \\n \\r \\t and \\x escapes", () => {
      expect(ev(`'it\\'s'`)).toBe("it's")
      expect(ev(`"it's"`)).toBe("it's")
      expect(ev(`'say "hi"'`)).toBe("say \"hi\"")
      expect(ev(`"a\\nb"`)).toBe("a\nb")
      expect(ev(`'\\t\\r'`)).toBe("\t\r")
      expect(ev(`'a\\\\'`)).toBe("a\\")
      expect(ev(`'\\\\n'`)).toBe("\\n")
      expect(ev(`'\\q'`)).toBe("q")
      expect(ev(`"\\""`)).toBe("\"")
      expect(ev(`'ünïcödé ✓'`)).toBe("ünïcödé ✓")
      expect(ev(`''`)).toBe("")
    })

    it("reads integers, floats and booleans", () => {
      expect(ev("42")).toBe(42)
      expect(ev("3.25")).toBe(3.25)
      expect(ev(".5")).toBe(0.5)
      expect(ev("1.")).toBe(1)
      expect(ev("007")).toBe(7)
      expect(ev("true")).toBe(1)
      expect(ev("false")).toBe(0)
    })

    it("reads bare durations as integer milliseconds", () => {
      expect(ev("5m")).toBe(300_000)
      expect(ev("3m")).toBe(180_000)
      expect(ev("1h")).toBe(3_600_000)
      expect(ev("500ms")).toBe(500)
      expect(ev("10s")).toBe(10_000)
      expect(ev("2d")).toBe(172_800_000)
      expect(ev("5d")).toBe(432_000_000)
      expect(ev("3M")).toBe(180_000)
      expect(ev("expires_in < 1h", { expires_in: 1_000 })).toBe(1)
      expect(ev("retry_num > 0 && expires_in < 1h", { retry_num: 1, expires_in: 7_200_000 })).toBe(0)
      expect(failure("1h30m").column).toBe(1)
      expect(failure("1w").column).toBe(1)
    })

    it("builds arrays and indexes them; out of range is ''", () => {
      expect(ev("[]")).toEqual([])
      expect(ev("['a', 'b'][1]")).toBe("b")
      expect(ev("['a', 'b',]")).toEqual(["a", "b"])
      expect(ev("[1, 2][5]")).toBe("")
      expect(ev("[1, [2, 3]][1][0]")).toBe(2)
      expect(ev("[1, 2][1.7]")).toBe(2)
      expect(ev("[1, 2]['1']")).toBe(2)
      expect(ev("[1, 2]['x']")).toBe(1)
      expect(ev("recipients[0]", { recipients: ["x@a", "y@b"] })).toBe("x@a")
      expect(ev("recipients[-1]", { recipients: ["x@a", "y@b"] })).toBe("")
      expect(ev("recipients[1 + 0]", { recipients: ["x@a", "y@b"] })).toBe("y@b")
      // A non-empty scalar is its own item 0.
      expect(ev("rcpt[0]", { rcpt: "a@b" })).toBe("a@b")
      expect(ev("rcpt[1]", { rcpt: "a@b" })).toBe("")
      expect(ev("''[0]")).toBe("")
      expect(ev("split('a,b', ',')[1]")).toBe("b")
      expect(ev("['10.0.0.1', '10.0.0.2']")).toEqual(["10.0.0.1", "10.0.0.2"])
    })

    it("reads every Stalwart constant bare, and v0.12's TLS aliases", () => {
      for (const name of CONSTANT_NAMES) expect(ev(name)).toEqual(new Constant(name))
      expect(ev("required")).toEqual(new Constant("require"))
      expect(ev("disabled")).toEqual(new Constant("disable"))
      expect(ev("none")).toEqual(new Constant("disable"))
      expect(String(ev("ipv6_then_ipv4"))).toBe("ipv6_then_ipv4")
    })

    it("reads variables, with '' for one not supplied", () => {
      const expr = compiled("[sender, sender_domain, rcpt, rcpt_domain, recipients, priority, retry_num]" +
        " + [last_error, last_status, expires_in, queue_name, source, notify_num, queue_age, mx, remote_ip, local_ip]")
      expect(expr.variables).toEqual(Expression.KNOWN_VARIABLES)
      expect(Expression.KNOWN_VARIABLES.size).toBe(17)
      expect(ev("mx")).toBe("")
      expect(ev("mx", { mx: "mx1.example.org" })).toBe("mx1.example.org")
      expect(ev("remote_ip", { remote_ip: "192.0.2.1" })).toBe("192.0.2.1")
      expect(compiled("1 + 2").variables.size).toBe(0)
      expect([...compiled("if_then(mx, local_ip, remote_ip)").variables].sort())
        .toEqual(["local_ip", "mx", "remote_ip"])
    })
  })

  describe("functions", () => {
    const lookup = { default: { hostname: "mx.example.org", n: 5 }, other: {} }

    it("key_get and key_exists read the [lookup.<store>] tables", () => {
      expect(ev("key_get('default', 'hostname')", {}, { lookup })).toBe("mx.example.org")
      expect(ev("key_get('default', 'n') + 1", {}, { lookup })).toBe(6)
      expect(ev("key_get('default', 'missing')", {}, { lookup })).toBe("")
      expect(ev("key_get('nope', 'hostname')", {}, { lookup })).toBe("")
      expect(ev("key_get('default', 'hostname')")).toBe("")
      expect(ev("key_get('default', 'constructor')", {}, { lookup })).toBe("")
      expect(ev("key_get('constructor', 'name')", {}, { lookup })).toBe("")
      expect(ev("key_get('default', rcpt_domain)", { rcpt_domain: "hostname" }, { lookup })).toBe("mx.example.org")
      expect(ev("key_exists('default', 'hostname')", {}, { lookup })).toBe(1)
      expect(ev("key_exists('default', 'x')", {}, { lookup })).toBe(0)
      expect(ev("key_exists('other', 'x')", {}, { lookup })).toBe(0)
      expect(ev("key_exists('nope', 'x')", {}, { lookup })).toBe("")
    })

    it("text predicates: starts_with ends_with contains eq_ignore_case", () => {
      expect(ev("starts_with(rcpt, 'jane')", { rcpt: "jane@x" })).toBe(1)
      expect(ev("starts_with(rcpt, 'Jane')", { rcpt: "jane@x" })).toBe(0)
      expect(ev("ends_with(rcpt_domain, '.org')", { rcpt_domain: "example.org" })).toBe(1)
      expect(ev("ends_with(rcpt_domain, '.net')", { rcpt_domain: "example.org" })).toBe(0)
      expect(ev("contains('example.org', 'mple')")).toBe(1)
      expect(ev("contains('example.org', 'x.o')")).toBe(0)
      expect(ev("contains(recipients, 'b@y')", { recipients: ["a@x", "b@y"] })).toBe(1)
      expect(ev("contains(recipients, 'b@')", { recipients: ["a@x", "b@y"] })).toBe(0)
      expect(ev("contains(12345, 34)")).toBe(1)
      expect(ev("contains_ignore_case('Example', 'AMP')")).toBe(1)
      expect(ev("contains_ignore_case(['A@X'], 'a@x')")).toBe(1)
      expect(ev("eq_ignore_case('MX.Example.ORG', 'mx.example.org')")).toBe(1)
      expect(ev("eq_ignore_case('straße', 'STRASSE')")).toBe(0)
      expect(ev("eq_ignore_case(1, '1')")).toBe(1)
    })

    it("case and trimming map over arrays", () => {
      expect(ev("to_lowercase('MX.Example.ORG')")).toBe("mx.example.org")
      expect(ev("to_uppercase('abc')")).toBe("ABC")
      expect(ev("to_lowercase(recipients)", { recipients: ["A@X", "B@Y"] })).toEqual(["a@x", "b@y"])
      expect(ev("to_uppercase([1, 'a'])")).toEqual(["1", "A"])
      expect(ev("to_uppercase(5)")).toBe("5")
      expect(ev("trim('  a b \t')")).toBe("a b")
      expect(ev("trim_start('  a ')")).toBe("a ")
      expect(ev("trim_end('  a ')")).toBe("  a")
      expect(ev("trim([' a', 'b '])")).toEqual(["a", "b"])
      expect(ev("is_uppercase('ABC1')")).toBe(1)
      expect(ev("is_lowercase('abC')")).toBe(0)
      expect(ev("has_digits(['a1', 'b'])")).toEqual([1, 0])
      expect(ev("strip_prefix('mx1.example.org', 'mx1.')")).toBe("example.org")
      expect(ev("strip_prefix('a', 'b')")).toBe("")
      expect(ev("strip_suffix(['a.org', 'b.net'], '.org')")).toEqual(["a", ""])
    })

    it("email_part splits at the last @ and maps over arrays", () => {
      expect(ev("email_part(rcpt, 'local')", { rcpt: "jane.doe@example.org" })).toBe("jane.doe")
      expect(ev("email_part(rcpt, 'domain')", { rcpt: "jane.doe@example.org" })).toBe("example.org")
      expect(ev("email_part('\"a@b\"@example.org', 'local')")).toBe("\"a@b\"")
      expect(ev("email_part('nobody', 'domain')")).toBe("")
      expect(ev("email_part('a@b', 'host')")).toBe("")
      expect(ev("email_part(recipients, 'domain')", { recipients: ["a@x.org", "b@y.net"] })).toEqual(["x.org", "y.net"])
      expect(ev("is_email('jane@example.org')")).toBe(1)
      expect(ev("is_email('jane@localhost')")).toBe(0)
      expect(ev("is_email('ja ne@example.org')")).toBe(0)
    })

    it("IP predicates use node:net and Rust's address syntax", () => {
      expect(ev("is_ipv4_addr('192.0.2.1')")).toBe(1)
      expect(ev("is_ipv4_addr('2001:db8::1')")).toBe(0)
      expect(ev("is_ipv4_addr('192.0.2')")).toBe(0)
      expect(ev("is_ipv4_addr('01.2.3.4')")).toBe(0)
      expect(ev("is_ipv6_addr('2001:db8::1')")).toBe(1)
      expect(ev("is_ipv6_addr('::ffff:192.0.2.1')")).toBe(1)
      expect(ev("is_ipv6_addr('fe80::1%eth0')")).toBe(0)
      expect(ev("is_ipv6_addr('192.0.2.1')")).toBe(0)
      expect(ev("is_ip_addr(remote_ip)", { remote_ip: "::1" })).toBe(1)
      expect(ev("is_ip_addr(' ::1')")).toBe(0)
      expect(ev("ip_reverse_name('192.0.2.1')")).toBe("1.2.0.192")
      expect(ev("ip_reverse_name('2001:db8::1')"))
        .toBe("1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2")
    })

    it("is_ip_in_cidr matches v4 and v6 networks", () => {
      expect(ev("is_ip_in_cidr('10.30.20.11', '10.0.0.0/8')")).toBe(1)
      expect(ev("is_ip_in_cidr('11.30.20.11', '10.0.0.0/8')")).toBe(0)
      expect(ev("is_ip_in_cidr('192.168.1.1', '192.168.1.1')")).toBe(1)
      expect(ev("is_ip_in_cidr('193.168.1.1', '192.168.1.1')")).toBe(0)
      expect(ev("is_ip_in_cidr('192.0.2.200', '192.0.2.128/25')")).toBe(1)
      expect(ev("is_ip_in_cidr('192.0.2.100', '192.0.2.128/25')")).toBe(0)
      expect(ev("is_ip_in_cidr('2001:db8:1::5', '2001:db8::/32')")).toBe(1)
      expect(ev("is_ip_in_cidr('2001:db9::5', '2001:db8::/32')")).toBe(0)
      expect(ev("is_ip_in_cidr('2001:db8::1', '2001:db8::1')")).toBe(1)
      expect(ev("is_ip_in_cidr('2001:db8::1', '2001:db8::1/127')")).toBe(1)
      expect(ev("is_ip_in_cidr('2001:db8::3', '2001:db8::1/127')")).toBe(0)
      // A v4-mapped IPv6 address is the IPv4 address, both ways.
      expect(ev("is_ip_in_cidr('::ffff:10.1.2.3', '10.0.0.0/8')")).toBe(1)
      expect(ev("is_ip_in_cidr('10.1.2.3', '::ffff:10.0.0.0/104')")).toBe(1)
      expect(ev("is_ip_in_cidr('10.1.2.3', '2001:db8::/32')")).toBe(0)
      // Stalwart accepts prefixes of 8 bits or more only; anything unparsable matches nothing.
      expect(ev("is_ip_in_cidr('10.1.2.3', '0.0.0.0/0')")).toBe(0)
      expect(ev("is_ip_in_cidr('10.1.2.3', '10.0.0.0/33')")).toBe(0)
      expect(ev("is_ip_in_cidr('10.1.2.3', 'garbage')")).toBe(0)
      expect(ev("is_ip_in_cidr('garbage', '10.0.0.0/8')")).toBe(0)
      expect(ev("is_ip_in_cidr('10.1.2.3', ' 10.0.0.0 / 8 ')")).toBe(1)
    })

    it("count, is_empty, len, if_then", () => {
      expect(ev("count(recipients)", { recipients: ["a", "b", "c"] })).toBe(3)
      expect(ev("count('a')")).toBe(1)
      expect(ev("count('')")).toBe(0)
      expect(ev("count(0)")).toBe(1)
      expect(ev("is_empty('')")).toBe(1)
      expect(ev("is_empty([])")).toBe(1)
      expect(ev("is_empty('a')")).toBe(0)
      expect(ev("is_empty(0)")).toBe(0)
      expect(ev("len('abc')")).toBe(3)
      expect(ev("len('é')")).toBe(2)
      expect(ev("len([1, 2])")).toBe(2)
      expect(ev("len(1234)")).toBe(4)
      expect(ev("if_then(retry_num > 2, ipv4_only, ipv6_then_ipv4)", { retry_num: 3 }))
        .toEqual(new Constant("ipv4_only"))
      expect(ev("if_then(retry_num > 2, ipv4_only, ipv6_then_ipv4)", { retry_num: 0 }))
        .toEqual(new Constant("ipv6_then_ipv4"))
    })

    it("array and splitting helpers", () => {
      expect(ev("split('a,b,,c', ',')")).toEqual(["a", "b", "", "c"])
      expect(ev("split('ab', '')")).toEqual(["", "a", "b", ""])
      expect(ev("rsplit('a.b.c', '.')")).toEqual(["c", "b", "a"])
      expect(ev("rsplit('aaa', 'aa')")).toEqual(["", "a"])
      expect(ev("split_once('a=b=c', '=')")).toEqual(["a", "b=c"])
      expect(ev("rsplit_once('a=b=c', '=')")).toEqual(["a=b", "c"])
      expect(ev("split_once('abc', '=')")).toBe("")
      expect(ev("split_n('a,b,c', ',', 1)")).toEqual(["a", "b,c"])
      expect(ev("split_n('a,b,c', ',', -1)")).toEqual(["a", "b", "c"])
      expect(ev("split_n('ab', '', 1)")).toEqual(["", "ab"])
      expect(ev("split_n('ab', '', -1)")).toEqual(["", "a", "b", ""])
      expect(ev("lines('a\\r\\nb\\n')")).toEqual(["a", "b"])
      expect(ev("substring('héllo', 1, 3)")).toBe("éll")
      expect(ev("sort(['b', 'a', 'c'], true)")).toEqual(["a", "b", "c"])
      expect(ev("sort([3, 1, 2], false)")).toEqual([3, 2, 1])
      expect(ev("dedup(['a', 'b', 'a'])")).toEqual(["a", "b"])
      expect(ev("winnow(['a', '', 'b'])")).toEqual(["a", "b"])
      expect(ev("is_intersect(['a', 'b'], ['c', 'b'])")).toBe(1)
      expect(ev("is_intersect(['a'], 'b')")).toBe(0)
      expect(ev("is_number(1.5)")).toBe(1)
      expect(ev("is_number('1')")).toBe(0)
      expect(ev("bit_and(6, 3)")).toBe(2)
      expect(ev("count_chars('héllo')")).toBe(5)
      expect(ev("count_spaces('a b  c')")).toBe(3)
      expect(ev("count_uppercase('AbC')")).toBe(2)
      expect(ev("count_lowercase('AbC')")).toBe(1)
      expect(ev("split_words('hello, big world')")).toEqual(["big", "world"])
      expect(ev("hash('abc', 'sha256')")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
      expect(ev("hash('abc', 'crc32')")).toBe("")
    })

    it("matches() compiles the pattern once and exposes $0, $1… captures", () => {
      expect(ev("matches('^([^@]+)@(.+)$', rcpt)", { rcpt: "jane@example.org" })).toBe(1)
      expect(ev("matches('^([^@]+)@(.+)$', rcpt)", { rcpt: "nobody" })).toBe(0)
      expect(ev("matches('(\\d+)', 'ab12') && $1 == '12'")).toBe(1)
      expect(ev("matches('(\\d+)', 'ab12') && $0")).toBe(1)
      expect(ev("matches('(x)?y', 'y') && $1 == '' && $5 == ''")).toBe(1)
      expect(ev("matches('(?i)^MX\\d', 'mx1.example.org')")).toBe(1)
      expect(ev("matches('(?P<host>[a-z]+)\\.', 'mx.example') && $1 == 'mx'")).toBe(1)
      expect(ev("$1")).toBe("")
      // The pattern is taken as written, so a regex escape needs one backslash; ordinary strings drop it.
      expect(ev("matches('a\\.b', 'a.b')")).toBe(1)
      expect(ev("matches('a\\.b', 'axb')")).toBe(0)
      expect(ev("matches('it\\'s', \"it's\")")).toBe(1)
      expect(ev("'\\d'")).toBe("d")
      expect(tree("matches('^(\\d+)$', rcpt)")).toBe("matches('^(\\d+)$', rcpt)")
    })
  })

  describe("compileIfBlock", () => {
    it("the Stalwart seed example: retry_num == 0 → ipv6_only, else ipv4_only", () => {
      const block = Either.getOrThrow(
        Expression.compileIfBlock([{ if: "retry_num == 0", then: "ipv6_only" }], "ipv4_only")
      )
      expect(block.evaluate({ retry_num: 0 })).toEqual(new Constant("ipv6_only"))
      expect(block.evaluate({ retry_num: 1 })).toEqual(new Constant("ipv4_only"))
      expect(block.evaluate({ retry_num: 1 })).toBeInstanceOf(Constant)
      expect([...block.variables]).toEqual(["retry_num"])
      expect(block.source).toBe("[ { if = \"retry_num == 0\", then = \"ipv6_only\" }, { else = \"ipv4_only\" } ]")
    })

    it("takes the first truthy if, in order", () => {
      const block = Either.getOrThrow(Expression.compileIfBlock([
        { if: "retry_num > 2", then: "'third'" },
        { if: "retry_num > 0 && last_error == 'tls'", then: "disable" },
        { if: "retry_num > 0", then: "'retry'" }
      ], "optional"))
      expect(block.evaluate({ retry_num: 5, last_error: "tls" })).toBe("third")
      expect(block.evaluate({ retry_num: 1, last_error: "tls" })).toEqual(new Constant("disable"))
      expect(block.evaluate({ retry_num: 1, last_error: "dns" })).toBe("retry")
      expect(block.evaluate({ retry_num: 0, last_error: "tls" })).toEqual(new Constant("optional"))
      expect([...block.variables].sort()).toEqual(["last_error", "retry_num"])
    })

    it("carries matches() captures from an if into its then", () => {
      const block = Either.getOrThrow(Expression.compileIfBlock([
        { if: "matches('^([^@]+)@(.+)$', rcpt)", then: "$2 + ':' + $1" }
      ], "'none:' + $1"))
      expect(block.evaluate({ rcpt: "jane@example.org" })).toBe("example.org:jane")
      expect(block.evaluate({ rcpt: "nobody" })).toBe("none:")
      // Each evaluation starts without captures.
      expect(block.evaluate({ rcpt: "jane@example.org" })).toBe("example.org:jane")
    })

    it("shares captures across the block, so the else sees a match whose if was false (as Stalwart)", () => {
      const block = Either.getOrThrow(
        Expression.compileIfBlock([{ if: "matches('(a+)', rcpt) && false", then: "'x'" }], "$1")
      )
      expect(block.evaluate({ rcpt: "baab" })).toBe("aa")
      expect(block.evaluate({ rcpt: "b" })).toBe("")
    })

    it("with no branches is the else expression", () => {
      const block = Either.getOrThrow(Expression.compileIfBlock([], "5m"))
      expect(block.evaluate({})).toBe(300_000)
    })

    it("reports every field that does not compile, with its branch and column", () => {
      const result = Expression.compileIfBlock([
        { if: "retry_num ==", then: "ok" },
        { if: "1", then: "'fine'" }
      ], "mx.example.org")
      if (Either.isRight(result)) throw new Error("expected errors")
      expect(result.left.map(({ branch, error, field }) => [branch, field, error.column, error.source])).toEqual([
        [0, "if", 13, "retry_num =="],
        [0, "then", 1, "ok"],
        [2, "else", 1, "mx.example.org"]
      ])
      expect(result.left[2]!.error.message).toContain("unknown identifier \"mx.example.org\"")
    })
  })

  describe("compile errors", () => {
    it("an unknown identifier, such as an unquoted host name (stalwart#425)", () => {
      const error = failure("mx.example.org")
      expect(error.column).toBe(1)
      expect(error.message).toBe(
        "unknown identifier \"mx.example.org\": not a variable, function, constant or duration" +
          " (to use it as text, quote it: 'mx.example.org')"
      )
      expect(failure("retry_num > 0 && mx.example.org").column).toBe(18)
      expect(failure("relay").column).toBe(1)
      expect(failure("rcpt_domain == example").column).toBe(16)
      expect(ev("'mx.example.org'")).toBe("mx.example.org")
    })

    it("an unterminated string, at its opening quote", () => {
      expect(failure("rcpt == 'abc")).toEqual({ message: "unterminated string: the closing ' is missing", column: 9 })
      expect(failure("\"abc\\\"").column).toBe(1)
    })

    it("an unknown or unsupported function, and a wrong arity", () => {
      expect(failure("foo(1)")).toEqual({ message: "unknown function \"foo\"", column: 1 })
      expect(failure("1 + is_local_domain('*', rcpt_domain)")).toEqual({
        message: "function is_local_domain is not supported by this library",
        column: 5
      })
      expect(failure("starts_with(rcpt)")).toEqual({
        message: "function starts_with expects 2 arguments, found 1",
        column: 1
      })
      expect(failure("1 + count()")).toEqual({ message: "function count expects 1 argument, found 0", column: 5 })
      expect(failure("if_then(1, 2, 3, 4)").message).toBe("function if_then expects 3 arguments, found 4")
      expect(failure("matches('a')").message).toBe("function matches expects 2 arguments, found 1")
      expect(failure("count + 1")).toEqual({
        message: "function count must be called with parentheses: count(…)",
        column: 1
      })
    })

    it("unbalanced parentheses and brackets", () => {
      expect(failure("(1 + 2")).toEqual({ message: "'(' is never closed", column: 1 })
      expect(failure("1 + 2)")).toEqual({ message: "unmatched ')'", column: 6 })
      expect(failure("starts_with(rcpt, 'a'")).toEqual({ message: "'(' is never closed", column: 12 })
      expect(failure("[1, 2")).toEqual({ message: "'[' is never closed", column: 1 })
      expect(failure("(1 + 2]")).toEqual({ message: "expected ')', found ']'", column: 7 })
      expect(failure("()")).toEqual({ message: "expected a value, found ')'", column: 2 })
    })

    it("a trailing operator, at the end of the expression", () => {
      expect(failure("retry_num >"))
        .toEqual({ message: "expected a value, found the end of the expression", column: 12 })
      expect(failure("1 +").column).toBe(4)
      expect(failure("1 + ").column).toBe(5)
      expect(failure("!").column).toBe(2)
      expect(failure("").column).toBe(1)
    })

    it("other malformed input", () => {
      expect(failure("1 2")).toEqual({ message: "expected an operator, found \"2\"", column: 3 })
      expect(failure("rcpt # 1")).toEqual({ message: "unexpected character \"#\"", column: 6 })
      expect(failure("rcpt }")).toEqual({ message: "unexpected character \"}\"", column: 6 })
      expect(failure("1 ! 2").column).toBe(3)
      expect(failure("1.2.3")).toEqual({ message: "invalid number \"1.2.3\"", column: 1 })
      expect(failure("99999999999999999999")).toEqual({
        message: "integer out of range \"99999999999999999999\"",
        column: 1
      })
      expect(failure("$name").column).toBe(1)
      expect(failure("size > 1"))
        .toEqual({ message: "variable size is not available in this library", column: 1 })
      expect(failure("matches('(', rcpt)").column).toBe(9)
      expect(failure("matches(rcpt, rcpt)"))
        .toEqual({ message: "the first argument of matches must be a quoted regular expression", column: 9 })
      const tooDeep = { message: "expression nested too deeply (more than 128 levels)", column: 129 }
      expect(failure("(".repeat(200) + "1" + ")".repeat(200))).toEqual(tooDeep)
      expect(failure("!".repeat(500) + "1")).toEqual(tooDeep)
      expect(ev("(".repeat(100) + "1" + ")".repeat(100))).toBe(1)
    })

    it.effect("long flat chains are fine (no depth limit on a list of alternatives)", () =>
      Effect.sync(() => {
        const domains = Array.from({ length: 2_000 }, (_, i) => "rcpt_domain == 'd" + i + ".example'")
        const expr = compiled(domains.join(" || "))
        expect(expr.evaluate({ rcpt_domain: "d1999.example" })).toBe(1)
        expect(expr.evaluate({ rcpt_domain: "other.example" })).toBe(0)
      }))
  })

  describe("evaluation never throws", () => {
    it("on values TypeScript cannot police", () => {
      const cyclic: Array<unknown> = []
      cyclic.push(cyclic)
      const expr = compiled("len(recipients) + rcpt")
      expect(expr.evaluate({ recipients: cyclic as never, rcpt: "x" })).toBe("")
      expect(expr.evaluate(null as never)).toBe(0)
      expect(ev("rcpt + 1", { rcpt: true as never })).toBe(2)
      expect(ev("rcpt", { rcpt: undefined as never })).toBe("")
      expect(ev("recipients", { recipients: [1, null, "a"] as never })).toEqual([1, "", "a"])
      expect(ev("rcpt", Object.create({ rcpt: "inherited" }))).toBe("")
    })
  })

  describe("properties", () => {
    const value: fc.Arbitrary<Value> = fc.letrec<{ value: Value }>((tie) => ({
      value: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        fc.string(),
        fc.constantFrom("", "0", "1", "-1", "1.5", "nan", "inf", "a@b.c", "192.0.2.1", "::1", "tls"),
        fc.integer(),
        fc.double(),
        fc.constantFrom(...CONSTANT_NAMES).map((name) => new Constant(name)),
        fc.array(tie("value"), { maxLength: 4 })
      )
    })).value

    const variables: fc.Arbitrary<Expression.Variables> = fc.record(
      Object.fromEntries([...Expression.KNOWN_VARIABLES].map((name) => [name, value])),
      { requiredKeys: [] }
    ).map((vars) => {
      const defined: Record<string, Value> = {}
      for (const [name, v] of Object.entries(vars)) if (v !== undefined) defined[name] = v
      return defined
    })

    const isValue = (v: unknown): boolean =>
      typeof v === "string" || typeof v === "number" || v instanceof Constant ||
      (Array.isArray(v) && v.every(isValue))

    /** compile never throws; an error has a column inside the source (or just past it). */
    const checkCompile = (source: string, vars: Expression.Variables): boolean => {
      const result = compileSource(source, { default: { hostname: "h" } })
      if (result._tag === "Left") {
        return Number.isInteger(result.column) && result.column >= 1 && result.column <= source.length + 1
      }
      return isValue(run(result.evaluate, vars))
    }

    const pieces = [
      "(", ")", "[", "]", ",", "+", "-", "*", "/", "!", "^", "&", "&&", "|", "||", "=", "==", "!=", "<", "<=",
      ">", ">=", "=>", "=<", "'a'", "\"b\"", "'x\\'y'", "'\\n'", "''", "'", "\"", "0", "1", "2.5", ".5", "1.2.3",
      "99999999999999999999", "5m", "1h30m", "true", "false", "$0", "$1", "$x", "rcpt", "recipients", "retry_num",
      "priority", "mx", "remote_ip", "ipv4_only", "require", "none", "mx.example.org", "count", "len", "split",
      "key_get", "key_exists", "if_then", "matches", "matches('(a)(b)?'", "matches('['", "is_ip_in_cidr",
      "email_part", "substring", "split_n", "sort", "dedup", "hash", "is_local_domain", "foo", "}", "#", " ", "\t"
    ]
    const soup = fc.tuple(fc.array(fc.constantFrom(...pieces), { maxLength: 24 }), fc.constantFrom("", " "))
      .map(([parts, separator]) => parts.join(separator))

    // Well-formed expressions from the grammar: each must compile, and evaluate to a Value on any variables.
    const leaf = fc.oneof(
      fc.constantFrom(...Expression.KNOWN_VARIABLES),
      fc.constantFrom("0", "1", "-1", "2.5", "5m", "true", "'a'", "''", "'10.0.0.0/8'", "ipv6_only", "$1", "[]")
    )
    const binaryOps = ["*", "/", "+", "-", ">", ">=", "=>", "<", "<=", "=<", "==", "=", "!=", "^", "&&", "&", "||", "|"]
    const calls: ReadonlyArray<readonly [string, number]> = [
      ["count", 1], ["len", 1], ["is_empty", 1], ["to_lowercase", 1], ["trim", 1], ["email_part", 2],
      ["starts_with", 2], ["contains", 2], ["split", 2], ["is_ip_in_cidr", 2], ["key_get", 2], ["key_exists", 2],
      ["if_then", 3], ["substring", 3], ["split_n", 3], ["sort", 2], ["dedup", 1], ["is_ipv6_addr", 1],
      ["rsplit", 2], ["lines", 1], ["winnow", 1], ["bit_and", 2], ["strip_suffix", 2], ["ip_reverse_name", 1]
    ]
    const wellFormed = fc.letrec<{ expr: string }>((tie) => ({
      expr: fc.oneof(
        { depthSize: "small", withCrossShrink: true },
        leaf,
        fc.tuple(tie("expr"), fc.constantFrom(...binaryOps), tie("expr")).map(([a, op, b]) => a + " " + op + " " + b),
        fc.tuple(fc.constantFrom("!", "-"), tie("expr")).map(([op, a]) => op + a),
        tie("expr").map((a) => "(" + a + ")"),
        fc.array(tie("expr"), { maxLength: 3 }).map((items) => "[" + items.join(", ") + "]"),
        fc.tuple(tie("expr"), tie("expr")).map(([a, i]) => "(" + a + ")[" + i + "]"),
        fc.tuple(fc.constantFrom(...calls), fc.array(tie("expr"), { minLength: 3, maxLength: 3 }))
          .map(([[name, arity], args]) => name + "(" + args.slice(0, arity).join(", ") + ")"),
        tie("expr").map((a) => "matches('^(\\w+)@?(.*)$', " + a + ")")
      )
    })).expr

    const anyString = fc.oneof(fc.string(), fc.string({ unit: "binary" }), fc.string({ unit: "grapheme" }))

    it.prop(
      "compile never throws on arbitrary strings; errors point inside the source",
      [anyString, variables],
      ([source, vars]) => checkCompile(source, vars),
      { fastCheck: RUNS }
    )

    it.prop(
      "compile never throws on token soups of the grammar's pieces",
      [soup, variables],
      ([source, vars]) => checkCompile(source, vars),
      { fastCheck: RUNS }
    )

    it.prop(
      "every well-formed expression compiles, and evaluates to a Value on arbitrary variables",
      [wellFormed, variables],
      ([source, vars]) => {
        const result = compileSource(source, { default: { hostname: "h" } })
        if (result._tag === "Left") throw new Error(source + ": " + result.message + " at " + result.column)
        return isValue(run(result.evaluate, vars))
      },
      { fastCheck: RUNS }
    )
  })
})
