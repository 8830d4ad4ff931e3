# Two steps through a TES executor: `upper` upper-cases the text (stdin to stdout), `prefix`
# reads upper's output file (an argument) and prefixes each line. Run by
# tests/e2e/test_tes_workflow_manager.py with cwl-tes against JobCloud's TES API.
cwlVersion: v1.0
class: Workflow
inputs:
  text: File
outputs:
  final:
    type: File
    outputSource: prefix/out
steps:
  upper:
    run: upper.cwl
    in: {src: text}
    out: [out]
  prefix:
    run: prefix.cwl
    in: {src: upper/out}
    out: [out]
