"""
The course's command line (course/README.md is the instructor's guide):

    python -m course list                          # one line per assignment: number, functions, time
    python -m course start 1 --out ~/a1            # a student copy with assignment 1's functions blanked
    python -m course check 1                       # in a student copy (or here): checks, then the experiment
    python -m course check 1 --fast --json         # the checks only, as JSON for an autograder
    python -m course check 1 --reference ~/cramlm  # also compare with the reference on unseen inputs
    python -m course measure 1 --seeds 3           # instructors: re-measure the experiment's band
"""
import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

import torch

from course.kit import (CourseError, assignment_modules, check_against_reference, describe, generated_outputs, load,
                        measure_band, run_checks, run_experiment, start)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m course", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", help="one line per assignment: number, title, functions, experiment time")
    begin = commands.add_parser("start", help="write a student copy with the assignment's functions blanked")
    begin.add_argument("number", type=int, help="assignment number (python -m course list)")
    begin.add_argument("--out", required=True, help="a new or empty folder for the student copy")
    grade = commands.add_parser("check", help="run an assignment's checks and its experiment; exit 1 on a failure")
    grade.add_argument("number", type=int, help="assignment number")
    grade.add_argument("--fast", action="store_true", help="the unit checks only, not the experiment")
    grade.add_argument("--json", action="store_true", help="print one JSON object (for an autograder)")
    grade.add_argument("--reference", metavar="PATH",
                       help="instructors: the full repository; compare with its functions on freshly generated inputs")
    grade.add_argument("--seed", type=int, default=0, help="the experiment's seed (bands hold for any seed)")
    measure = commands.add_parser("measure", help="instructors: run the experiment over seeds, store its band")
    measure.add_argument("number", type=int, help="assignment number")
    measure.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 (at least 3 for a band)")
    outputs = commands.add_parser("outputs", help=argparse.SUPPRESS)  # what --reference runs in the reference tree
    outputs.add_argument("number", type=int)
    outputs.add_argument("--seed", type=int, required=True)
    outputs.add_argument("--out", required=True)
    return parser.parse_args(argv)


def check(args) -> int:
    module = load(args.number)
    results = run_checks(module)
    if args.reference:
        results.append(check_against_reference(args.number, args.reference))
    if not args.fast:
        results.append(run_experiment(args.number, args.seed))
    passed = all(result.passed for result in results)
    if args.json:
        print(json.dumps({"assignment": args.number, "passed": passed, "score": sum(r.passed for r in results),
                          "max_score": len(results), "results": [asdict(r) for r in results]}, indent=1))
    else:
        print(f"assignment {args.number}: {module.ASSIGNMENT.title}")
        for result in results:
            print(f"  {'PASS' if result.passed else 'FAIL'}  {result.name}: {result.why}")
        print(f"{sum(r.passed for r in results)} passed, {sum(not r.passed for r in results)} failed")
    return 0 if passed else 1


def main(argv=None):
    args = parse_args(argv)
    try:
        if args.command == "list":
            for number in sorted(assignment_modules()):
                print(describe(number))
        elif args.command == "start":
            functions = start(args.number, args.out)
            assignment = load(args.number).ASSIGNMENT
            print(f"wrote a student copy to {args.out}: assignment {args.number} ({assignment.title})")
            print("functions to write: " + ", ".join(functions))
            print(f"handout: {Path(args.out) / assignment.handout}")
            print(f"check with: cd {args.out} && python -m course check {args.number}")
        elif args.command == "check":
            sys.exit(check(args))
        elif args.command == "measure":
            band = measure_band(args.number, args.seeds)
            print(json.dumps(band, indent=1))
        elif args.command == "outputs":
            torch.save(generated_outputs(args.number, args.seed), args.out)
    except CourseError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()
