;; alert-tasks: the kick artifact shipped with Colony. It subscribes to the limit
;; alerts the kernel publishes (colony.events.alert.<limit>) and posts a task for
;; each on the board, with the capability `ops`, so that a human or a worker looks
;; into it: at most one task per limit an hour (its key-value store remembers when
;; it last posted for each), so that a limit its own posting touches cannot make it
;; post in a loop. Written in WebAssembly's text format against Colony's host API
;; v1 (docs/artifacts.md); it runs on its own quotas like any artifact.
;;
;; Memory: 0 subject pattern, 64 greeting, 128 task prefix, 256 task suffix,
;; 512 a timestamp, 1024 the received message (16 KiB), 20480 the task being built.
(module
  (import "colony" "log" (func $log (param i32 i32) (result i32)))
  (import "colony" "now_ms" (func $now_ms (result i64)))
  (import "colony" "subscribe" (func $subscribe (param i32 i32) (result i32)))
  (import "colony" "receive" (func $receive (result i32)))
  (import "colony" "result" (func $result (param i32 i32) (result i32)))
  (import "colony" "kv_get" (func $kv_get (param i32 i32) (result i32)))
  (import "colony" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (import "colony" "task_post" (func $task_post (param i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $subscribed (mut i32) (i32.const 0))
  (data (i32.const 0) "colony.events.alert.>")
  (data (i32.const 64) "alert-tasks: listening on colony.events.alert.>")
  (data (i32.const 128) "{\"title\":\"Look into the alert on ")
  (data (i32.const 256) "\",\"capabilities\":[\"ops\"],\"description\":\"A limit crossed a warning threshold (colony.events.alert.<limit>). The decisions behind it are in the log: colony audit tail.\"}")

  ;; 1: more work, 2: idle until a message arrives, 0: done.
  (func (export "run") (result i32)
    (local $len i32) (local $at i32) (local $out i32) (local $byte i32) (local $now i64)
    (if (i32.eqz (global.get $subscribed))
      (then
        (if (i32.lt_s (call $subscribe (i32.const 0) (i32.const 21)) (i32.const 0))
          (then (return (i32.const 0))))
        (drop (call $log (i32.const 64) (i32.const 47)))
        (global.set $subscribed (i32.const 1))))
    (local.set $len (call $receive))
    (if (i32.lt_s (local.get $len) (i32.const 0)) (then (return (i32.const 2))))
    (if (i32.gt_s (local.get $len) (i32.const 16384)) (then (return (i32.const 1))))
    (drop (call $result (i32.const 1024) (i32.const 16384)))
    ;; The task: prefix, the alert's subject, suffix. A message starts
    ;; {"subject":" (12 bytes); its subject ends at the next quote.
    (memory.copy (i32.const 20480) (i32.const 128) (i32.const 33))
    (local.set $out (i32.const 20513))
    (local.set $at (i32.const 1036))
    (block $end
      (loop $next
        (br_if $end (i32.ge_u (local.get $at) (i32.add (i32.const 1024) (local.get $len))))
        (local.set $byte (i32.load8_u (local.get $at)))
        (br_if $end (i32.eq (local.get $byte) (i32.const 34)))
        (br_if $end (i32.ge_u (local.get $out) (i32.const 20713)))
        (i32.store8 (local.get $out) (local.get $byte))
        (local.set $out (i32.add (local.get $out) (i32.const 1)))
        (local.set $at (i32.add (local.get $at) (i32.const 1)))
        (br $next)))
    ;; At most one task per subject an hour: the store keeps when the last was posted.
    (local.set $now (call $now_ms))
    (if (i32.eq (call $kv_get (i32.const 20513) (i32.sub (local.get $out) (i32.const 20513))) (i32.const 8))
      (then
        (drop (call $result (i32.const 512) (i32.const 8)))
        (if (i64.lt_u (i64.sub (local.get $now) (i64.load (i32.const 512))) (i64.const 3600000))
          (then (return (i32.const 1))))))
    (i64.store (i32.const 512) (local.get $now))
    (drop (call $kv_put (i32.const 20513) (i32.sub (local.get $out) (i32.const 20513)) (i32.const 512) (i32.const 8)))
    (memory.copy (local.get $out) (i32.const 256) (i32.const 167))
    (local.set $out (i32.add (local.get $out) (i32.const 167)))
    (drop (call $task_post (i32.const 20480) (i32.sub (local.get $out) (i32.const 20480))))
    (i32.const 1))
)
