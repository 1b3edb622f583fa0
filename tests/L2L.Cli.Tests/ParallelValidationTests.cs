// The data-parallel options' rules: a bad device list, launcher or split stops before any backend with one error line and no file touched.
using L2L.TestSupport;
using Xunit;

namespace L2L.Cli.Tests;

public sealed class ParallelValidationTests(BackendFixture fixture)
{
    private const string Train = "train --config @/tiny.json --steps 2 --seq 4 --lr 0.01 --seed 5 --log @/metrics.jsonl --save @/ck";

    /// <summary>The environment Open MPI's mpirun gives rank 0 of a job of <paramref name="size"/> ranks.</summary>
    private static Dictionary<string, string> OpenMpi(int size) => new()
    {
        ["OMPI_COMM_WORLD_SIZE"] = size.ToString(System.Globalization.CultureInfo.InvariantCulture),
        ["OMPI_COMM_WORLD_RANK"] = "0",
        ["OMPI_COMM_WORLD_LOCAL_RANK"] = "0",
    };

    private static readonly Dictionary<string, string> NoLauncher = [];

    public static TheoryData<string, string> OneProcess => new()
    {
        { $"{Train} --batch 2 --devices cuda:x", "--devices: 'cuda:x' has a bad device index. Put a non-negative integer after ':'" },
        { $"{Train} --batch 2 --devices tpu*2", "--devices: 'tpu' is not a device. Use auto, cpu, cuda or opencl" },
        { $"{Train} --batch 2 --devices cpu*0", "--devices: 'cpu*0' has a bad count. Put a positive integer after '*' (e.g. cpu*2)." },
        { $"{Train} --batch 2 --devices cpu*two", "--devices: 'cpu*two' has a bad count" },
        { $"{Train} --batch 2 --devices cpu,,cpu", "--devices 'cpu,,cpu' has an empty entry" },
        { $"{Train} --batch 2 --devices auto", "--devices: 'auto' does not say which devices" },
        { $"{Train} --batch 2 --devices cuda:0,cuda*2", "--devices: cuda:0 is listed twice" },
        { $"{Train} --batch 2 --devices cpu*2 --device cpu", "--device and --devices cannot be used together" },
        { $"{Train} --batch 2 --micro-batches 1 --devices cpu*2", "--micro-batches 1 gives each rank 1 micro-batch, which does not split across its 2 devices" },
        { $"{Train} --batch 6 --micro-batches 3 --devices cpu*2", "--micro-batches 3 gives each rank 3 micro-batches, which do not split across its 2 devices: every device runs the same number. Use a --micro-batches that is a multiple of 2" },
        { $"{Train} --batch 4 --micro-batches 2 --devices cpu*2 --executor conventional", "--executor conventional runs on one device in one process, but this run has 1 MPI rank x 2 devices" },
        { $"{Train} --batch 4 --micro-batches 2 --devices cpu*2 --embedding-update device", "--embedding-update device keeps the embedding and head on one device" },
        { $"{Train} --batch 4 --micro-batches 2 --devices cpu*2 --loss-scale dynamic", "--loss-scale dynamic is not implemented for data parallel training (several devices or MPI ranks). Use --loss-scale none, or train on one device" },
        { $"{Train} --batch 2 --device cpu --distributed cluster", "--distributed cluster is not a known distributed mode. Use one of: auto, none, mpi" },
        { $"{Train} --batch 2 --device cpu --distributed mpi", "--distributed mpi, but no MPI launcher started this process" },
        { $"{Train} --batch 2 --device cpu --shard-optimizer", "--shard-optimizer splits the param server's optimizer state across MPI ranks, but this is one process" },
        { "bench train --steps 1 --devices cpu*0", "--devices: 'cpu*0' has a bad count" },
        { "bench train --steps 1 --devices cpu*2 --device cpu", "--device and --devices cannot be used together" },
        { "bench train --device cpu --steps 1 --shard-optimizer", "--shard-optimizer splits the param server's optimizer state" },
        { "bench train --device cpu --steps 1 --distributed mpi", "--distributed mpi, but no MPI launcher started this process" },
    };

    public static TheoryData<string, string> TwoRanks => new()
    {
        { $"{Train} --batch 2 --micro-batches 1 --device cpu", "--micro-batches 1 does not split across the 2 MPI ranks: every rank runs the same number of whole micro-batches" },
        { $"{Train} --batch 4 --micro-batches 2 --devices cpu*2", "--micro-batches 2 gives each rank 1 micro-batch, which does not split across its 2 devices: every device runs the same number. Use a --micro-batches that is a multiple of 4" },
        { $"{Train} --batch 2 --micro-batches 2 --device cpu --distributed none", "--distributed none, but the MPI launcher started 2 ranks: each would train alone" },
        { $"{Train} --batch 2 --micro-batches 2 --device cpu --executor conventional", "this run has 2 MPI ranks x 1 device" },
        { $"{Train} --batch 2 --micro-batches 2 --device cpu --shard-optimizer --executor conventional", "--shard-optimizer applies only to --executor relay" },
        { $"{Train} --batch 2 --micro-batches 2 --device cpu --shard-optimizer --optimizer-state bf16", "--shard-optimizer keeps each rank's share of the optimizer state in FP32. Use --optimizer-state fp32 with it" },
        { $"{Train} --batch 2 --micro-batches 2 --device cpu --shard-optimizer --optimizer lamb", "lamb's trust ratio needs each whole tensor" },
        { $"{Train} --batch 2 --micro-batches 2 --device cpu --shard-optimizer --clip-grad-norm 1", "--clip-grad-norm (global) keeps every layer's reduced gradients until the end of backward, which --shard-optimizer does not. Drop --shard-optimizer, or use --clip-mode layer" },
        { $"{Train} --batch 2 --micro-batches 2 --device cpu --shard-optimizer --update-mode deferred", "--update-mode deferred keeps every layer's reduced gradients" },
        { $"{Train} --batch 2 --micro-batches 2 --device cpu --loss-scale dynamic", "--loss-scale dynamic is not implemented for data parallel training" },
    };

    [Theory, MemberData(nameof(OneProcess))]
    public void OneProcessRules(string command, string expected) => Check(command, expected, NoLauncher);

    [Theory, MemberData(nameof(TwoRanks))]
    public void RulesUnderATwoRankLauncher(string command, string expected) => Check(command, expected, OpenMpi(2));

    [Fact]
    public void ShardingUnderAOneRankLauncherIsRefused() =>
        Check($"{Train} --batch 2 --device cpu --shard-optimizer", "but the MPI launcher started 1 rank", OpenMpi(1));

    [Fact]
    public void ResumeChecksTheRecordedMicroBatchCountAgainstTheDevices()
    {
        using var ws = Workspace.Create(fixture);
        // The template checkpoint recorded --micro-batches 1, which two devices cannot share.
        Check("train --resume @/ck --steps 4 --devices cpu*2", "--micro-batches 1 gives each rank 1 micro-batch, which does not split across its 2 devices", NoLauncher, ws);
    }

    private void Check(string command, string expected, IReadOnlyDictionary<string, string> variables, Workspace? ws = null)
    {
        using var owned = ws is null ? Workspace.Create(fixture) : null;
        ws ??= owned!;
        var before = ws.Snapshot();
        var launcherVariables = new[] { "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "PMI_RANK", "PMI_SIZE", "PMIX_RANK" };
        var result = ws.Run(fixture, ws.Words(command), name =>
            variables.TryGetValue(name, out var value) ? value : launcherVariables.Contains(name) ? null : Environment.GetEnvironmentVariable(name));
        Rejected.Check(result, 1, expected, before, ws);
    }
}
