;; counter: busy work that runs until its compute is exhausted. Each call of `run`
;; counts to a hundred thousand and asks for more; every hundred calls it keeps the
;; running total in its key-value store and logs a line. It has no loop of its own and no flag
;; saying it loops: the runtime calls `run` while the artifact has compute_ms left,
;; then marks it exhausted and resumes it by itself when the window refills.
;;
;;   colony artifacts deploy examples/artifacts/counter.wat --name counter \
;;     --quota compute_ms=300 -j "watch an artifact run until exhausted"
(module
  (import "colony" "log" (func $log (param i32 i32) (result i32)))
  (import "colony" "kv_put" (func $kv_put (param i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 1)
  (global $calls (mut i64) (i64.const 0))
  (data (i32.const 0) "total")
  (data (i32.const 16) "counted another ten million")

  (func (export "run") (result i32)
    (local $i i32)
    ;; The work: a hundred thousand additions (a fraction of a turn's fuel).
    (loop $count
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br_if $count (i32.lt_u (local.get $i) (i32.const 100000))))
    (global.set $calls (i64.add (global.get $calls) (i64.const 1)))
    ;; Every hundred calls: the calls so far, as 8 little-endian bytes under
    ;; "total", and a line in the log.
    (if (i64.eqz (i64.rem_u (global.get $calls) (i64.const 100)))
      (then
        (i64.store (i32.const 64) (global.get $calls))
        (drop (call $kv_put (i32.const 0) (i32.const 5) (i32.const 64) (i32.const 8)))
        (drop (call $log (i32.const 16) (i32.const 27)))))
    (i32.const 1))
)
