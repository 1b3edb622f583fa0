// Tokens/s of data-parallel training of the gpt2-tiny preset, with or without mpirun, for the scaling figures in the README.
using System.Globalization;
using L2L.Backends;
using L2L.Model;
using L2L.Training;
using L2L.Training.Distributed;
using L2L.Training.Parallel;
using L2L.Training.Tests;

namespace L2L.Distributed.Driver;

internal static class BenchTrain
{
    /// <summary>
    /// bench-train DEVICES STEPS [host]: the main job's global batch (8 sequences of 64 tokens in 2 micro-batches) on
    /// DEVICES CPU accelerators per rank, under mpirun or alone; prints the median tokens/s of the steps after the first.
    /// </summary>
    public static int Run(string[] args)
    {
        var devices = int.Parse(args[1], CultureInfo.InvariantCulture);
        var steps = int.Parse(args[2], CultureInfo.InvariantCulture);
        var placement = args.Length > 3 && args[3] == "host" ? StashPlacement.Host : StashPlacement.Device;
        var launch = MpiLaunch.Detect();
        using IHostCollectives collectives = launch.IsDistributed ? MpiCollectives.Initialize(launch, MpiOptions.FromEnvironment()) : new SingleProcessCollectives();
        var backends = Enumerable.Range(0, devices).Select(_ => Backend.CreateCpu()).ToArray();
        try
        {
            var config = (GptConfig)ModelConfigs.Preset("gpt2-tiny");
            const int batch = 8, microBatches = 2, seq = 64;
            var run = ParallelHarness.Train(new ParallelSetup(backends, collectives), steps, placement, batch, microBatches, seq, config: config);
            var timed = run.StepSeconds.Skip(1).Order().ToArray();
            var median = timed[timed.Length / 2];
            var tokens = batch * seq;
            Console.Out.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"rank {collectives.Rank}/{collectives.WorldSize}: devices={devices} ranks={collectives.WorldSize} placement={placement} steps={steps} " +
                $"median-step-s={median:F3} tokens-per-s={tokens / median:F1} cpu-s-per-step={run.StepCpuSeconds.Skip(1).Order().ElementAt(timed.Length / 2):F3} loss={run.Losses[0]:F4}->{run.Losses[^1]:F4} " +
                $"collective-s-per-step={run.Results.Skip(1).Average(r => r.CollectiveSeconds):F4} hidden-s-per-step={run.Results.Skip(1).Average(r => r.CollectiveHiddenSeconds):F4} " +
                $"host-bytes-per-parameter={run.HostBytes / (double)new ModelLayout(config).TotalLength:F2}"));
            return 0;
        }
        finally
        {
            foreach (var b in backends) b.Dispose();
        }
    }
}
