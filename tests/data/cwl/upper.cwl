# Step 1: upper-case a text file (stdin -> stdout), in JobCloud's busybox image.
cwlVersion: v1.0
class: CommandLineTool
requirements:
  DockerRequirement: {dockerPull: "localhost/jobcloud/busybox:1"}
baseCommand: [tr, a-z, A-Z]
inputs:
  src: File
stdin: $(inputs.src.path)
stdout: upper.txt
outputs:
  out: {type: stdout}
