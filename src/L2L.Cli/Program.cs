// The l2l command: train, eval, bench, devices.
using System.CommandLine;
using L2L.Cli.Commands;

var root = new RootCommand("L2L: layer-to-layer relay training of transformer models on CUDA, OpenCL or the CPU accelerator.");
root.Subcommands.Add(TrainCommand.Create());
root.Subcommands.Add(EvalCommand.Create());
root.Subcommands.Add(GrowCommand.Create());
root.Subcommands.Add(DevicesCommand.Create());
root.Subcommands.Add(BenchCommand.Create());
return await root.Parse(args).InvokeAsync();
