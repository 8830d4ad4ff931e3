# Step 2: prefix each line of step 1's output (a file argument), in JobCloud's busybox image.
cwlVersion: v1.0
class: CommandLineTool
requirements:
  DockerRequirement: {dockerPull: "localhost/jobcloud/busybox:1"}
baseCommand: [sed, -e, "s/^/step2: /"]
inputs:
  src: {type: File, inputBinding: {position: 1}}
stdout: final.txt
outputs:
  out: {type: stdout}
