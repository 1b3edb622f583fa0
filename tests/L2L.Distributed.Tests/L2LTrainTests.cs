// `l2l train` end to end under mpirun and with two CPU accelerators: the same losses and weights as one process, rank-0-only
// files, resume across world sizes, bad splits, and a killed rank.
using System.Diagnostics;
using L2L.Model;
using Xunit;

namespace L2L.Distributed.Tests;

public sealed class L2LTrainTests
{
    // Two ranks (or devices) sum the same gradients in another order than one process, so results agree to rounding:
    // the loss to 1e-5 (relative), every weight after the AdamW steps to 1e-4 (absolute; lr 0.01).
    private const double LossTolerance = 1e-5, WeightTolerance = 1e-4;

    private static string Args(L2LJob job, int steps) =>
        $"train --config {job.Config} --steps {steps} --batch 4 --micro-batches 2 --seq 8 --lr 0.01 --seed 5 --shuffle --device cpu --embedding-update host";

    private const string Outputs = "--log m.jsonl --save ck --plot loss.png";

    [Theory]
    [InlineData("openmpi")]
    [InlineData("mpich")]
    public void TwoRanks_TrainLikeOneProcess_AndOnlyRankZeroWrites(string family)
    {
        var mpi = MpiRun.Get(family);
        mpi.SkipIfMissing();
        using var job = new L2LJob();
        var single = job.NewDirectory("single");
        var alone = job.RunAlone(single, $"{Args(job, 4)} {Outputs}");
        Assert.True(alone.ExitCode == 0, alone.ToString());

        string rank0 = job.NewDirectory("rank0"), rank1 = job.NewDirectory("rank1");
        var ranks = job.RunRanks(mpi, [rank0, rank1], $"{Args(job, 4)} {Outputs}");
        Assert.True(ranks.ExitCode == 0, ranks.ToString());

        AssertSameLosses(L2LJob.Losses(Path.Combine(single, "m.jsonl")), L2LJob.Losses(Path.Combine(rank0, "m.jsonl")));
        AssertSameWeights(Path.Combine(single, "ck"), Path.Combine(rank0, "ck"));
        Assert.All(L2LJob.Field(Path.Combine(rank0, "m.jsonl"), "world_size"), v => Assert.Equal("2", v));
        Assert.All(L2LJob.Field(Path.Combine(rank0, "m.jsonl"), "devices"), v => Assert.Equal("1", v));
        Assert.All(L2LJob.Field(Path.Combine(single, "m.jsonl"), "world_size"), v => Assert.Equal("1", v));

        // Rank 1 ran in its own directory and wrote nothing there; the job printed one header and one summary (rank 0's).
        Assert.Empty(L2LJob.Files(rank1));
        Assert.Contains("m.jsonl", L2LJob.Files(rank0));
        Assert.Contains("loss.png", L2LJob.Files(rank0));
        Assert.Contains(Path.Combine("ck", Checkpoint.ModelFile), L2LJob.Files(rank0));
        Assert.Single(ranks.Out.Split('\n'), l => l.Contains("final: step 4", StringComparison.Ordinal));
        Assert.Single(ranks.Out.Split('\n'), l => l.Contains("l2l train", StringComparison.Ordinal));
        Assert.Contains("2 MPI ranks x 1 device (world_size 2, devices 1)", Unwrapped(ranks.Out));
        Assert.DoesNotContain("error", ranks.Error, StringComparison.OrdinalIgnoreCase);
    }

    [Fact]
    public void TwoRanksWithAShardedOptimizer_TrainLikeOneProcess_AndTheirCheckpointHoldsTheWholeState()
    {
        var mpi = MpiRun.Get("openmpi");
        mpi.SkipIfMissing();
        using var job = new L2LJob();
        var single = job.NewDirectory("single");
        var alone = job.RunAlone(single, $"{Args(job, 3)} --log m.jsonl --save ck");
        Assert.True(alone.ExitCode == 0, alone.ToString());
        string rank0 = job.NewDirectory("rank0"), rank1 = job.NewDirectory("rank1");
        var ranks = job.RunRanks(mpi, [rank0, rank1], $"{Args(job, 3)} --shard-optimizer --log m.jsonl --save ck");
        Assert.True(ranks.ExitCode == 0, ranks.ToString());
        Assert.Contains("2 MPI ranks x 1 device, sharded optimizer", Unwrapped(ranks.Out));
        Assert.Contains("param server (sharded: each rank's 1/2):", ranks.Out);
        AssertSameLosses(L2LJob.Losses(Path.Combine(single, "m.jsonl")), L2LJob.Losses(Path.Combine(rank0, "m.jsonl")));
        AssertSameWeights(Path.Combine(single, "ck"), Path.Combine(rank0, "ck"));
        // The checkpoint gathers every rank's shard: the optimizer state is the one process's, to rounding.
        var layout = Layout(Path.Combine(single, "ck"));
        var expected = Checkpoint.LoadTrainingState(Path.Combine(single, "ck"), layout);
        var actual = Checkpoint.LoadTrainingState(Path.Combine(rank0, "ck"), layout);
        Assert.Equal(expected.Step, actual.Step);
        for (var l = 0; l < expected.LayerStates.Length; l++)
        {
            Assert.Equal(expected.LayerStates[l].Length, actual.LayerStates[l].Length);
            for (var i = 0; i < expected.LayerStates[l].Length; i++)
                Assert.True(Math.Abs(expected.LayerStates[l][i] - actual.LayerStates[l][i]) <= WeightTolerance, $"layer {l} state {i}");
        }
        Assert.Empty(L2LJob.Files(rank1));
    }

    [Fact]
    public void ACheckpointOfTwoRanks_ContinuesAlikeInOneProcessAndInTwoRanks()
    {
        var mpi = MpiRun.Get("openmpi");
        mpi.SkipIfMissing();
        using var job = new L2LJob();
        string first0 = job.NewDirectory("first0"), first1 = job.NewDirectory("first1");
        var first = job.RunRanks(mpi, [first0, first1], $"{Args(job, 3)} --save ck");
        Assert.True(first.ExitCode == 0, first.ToString());
        var checkpoint = Path.Combine(first0, "ck");
        var before = Hashes(checkpoint);

        var single = job.NewDirectory("single");
        var alone = job.RunAlone(single, $"train --resume {checkpoint} --steps 5 --device cpu --log m.jsonl --save ck");
        Assert.True(alone.ExitCode == 0, alone.ToString());
        Assert.Contains("note: the checkpoint was written by 2 MPI ranks x 1 device and this run has 1 MPI rank x 1 device; that changes only the order in which gradients are summed.", alone.Out);

        // Both ranks read the same checkpoint (rank 0's), and rank 0 alone saves the continued run.
        string again0 = job.NewDirectory("again0"), again1 = job.NewDirectory("again1");
        var again = job.RunRanks(mpi, [again0, again1], $"train --resume {checkpoint} --steps 5 --device cpu --log m.jsonl --save ck");
        Assert.True(again.ExitCode == 0, again.ToString());
        Assert.DoesNotContain("note: the checkpoint was written", again.Out);

        var one = L2LJob.Losses(Path.Combine(single, "m.jsonl"));
        var two = L2LJob.Losses(Path.Combine(again0, "m.jsonl"));
        Assert.Equal([4L, 5], one.Select(s => s.Step));
        AssertSameLosses(one, two);
        AssertSameWeights(Path.Combine(single, "ck"), Path.Combine(again0, "ck"));
        Assert.Equal(5, Checkpoint.LoadTrainingState(Path.Combine(again0, "ck"), Layout(Path.Combine(again0, "ck"))).Step);
        Assert.Empty(L2LJob.Files(again1));
        Assert.Equal(before, Hashes(checkpoint)); // read, never written
    }

    [Fact]
    public void ABatchThatDoesNotSplitAcrossRanks_IsOneErrorOnEveryRankAndWritesNothing()
    {
        var mpi = MpiRun.Get("openmpi");
        mpi.SkipIfMissing();
        using var job = new L2LJob();
        string rank0 = job.NewDirectory("rank0"), rank1 = job.NewDirectory("rank1");
        var result = job.RunRanks(mpi, [rank0, rank1],
            $"train --config {job.Config} --steps 2 --batch 3 --micro-batches 3 --seq 8 --device cpu {Outputs}");
        Assert.True(result.ExitCode != 0, result.ToString());
        var errors = result.ErrorLines.Where(l => l.StartsWith("error:", StringComparison.Ordinal)).Distinct().ToArray();
        Assert.Equal("error: --micro-batches 3 does not split across the 2 MPI ranks: every rank runs the same number of whole micro-batches. " +
                     "Use a --micro-batches that is a multiple of 2 (and divides --batch).", Assert.Single(errors));
        Assert.DoesNotContain("   at ", result.Error);
        Assert.Empty(L2LJob.Files(rank0));
        Assert.Empty(L2LJob.Files(rank1));
    }

    [Theory]
    [InlineData("--micro-batches 2 --device cpu --shard-optimizer", "--shard-optimizer splits the param server's optimizer state across MPI ranks, but this is one process")]
    [InlineData("--micro-batches 2 --device cpu --distributed mpi", "--distributed mpi, but no MPI launcher started this process")]
    [InlineData("--micro-batches 1 --devices cpu*2", "--micro-batches 1 gives each rank 1 micro-batch, which does not split across its 2 devices")]
    public void BadInputInOneProcess_IsOneErrorLineAndWritesNothing(string change, string expected)
    {
        using var job = new L2LJob();
        var dir = job.NewDirectory("run");
        var result = job.RunAlone(dir, $"train --config {job.Config} --steps 2 --batch 2 --seq 8 {Outputs} {change}");
        Assert.True(result.ExitCode == 1, result.ToString());
        var line = Assert.Single(result.ErrorLines);
        Assert.StartsWith("error: ", line);
        Assert.Contains(expected, line);
        Assert.Equal("", result.Out);
        Assert.Empty(L2LJob.Files(dir));
    }

    [Fact]
    public void TwoCpuAccelerators_InOneProcess_TrainLikeOne()
    {
        using var job = new L2LJob();
        string one = job.NewDirectory("one"), two = job.NewDirectory("two");
        var a = job.RunAlone(one, $"{Args(job, 4)} --log m.jsonl --save ck");
        Assert.True(a.ExitCode == 0, a.ToString());
        var b = job.RunAlone(two, $"{Args(job, 4).Replace("--device cpu", "--devices cpu*2", StringComparison.Ordinal)} --log m.jsonl --save ck");
        Assert.True(b.ExitCode == 0, b.ToString());
        Assert.Contains("1 MPI rank x 2 devices (world_size 1, devices 2)", Unwrapped(b.Out));
        AssertSameLosses(L2LJob.Losses(Path.Combine(one, "m.jsonl")), L2LJob.Losses(Path.Combine(two, "m.jsonl")));
        AssertSameWeights(Path.Combine(one, "ck"), Path.Combine(two, "ck"));
        Assert.All(L2LJob.Field(Path.Combine(two, "m.jsonl"), "devices"), v => Assert.Equal("2", v));
        Assert.All(L2LJob.Field(Path.Combine(two, "m.jsonl"), "collective_seconds"), v => Assert.True(double.Parse(v, System.Globalization.CultureInfo.InvariantCulture) >= 0));
    }

    [Fact]
    public void BenchTrainOnTwoCpuAccelerators_ReportsTheScalingEfficiency()
    {
        using var job = new L2LJob();
        var dir = job.NewDirectory("bench");
        var result = job.RunAlone(dir, $"bench train --config {job.Config} --seq 8 --devices cpu*2 --micro-batches 1 --steps 2 --warmup 1 --json");
        Assert.True(result.ExitCode == 0, result.ToString());
        using var report = System.Text.Json.JsonDocument.Parse(result.Out);
        Assert.Equal(2, report.RootElement.GetProperty("devices").GetArrayLength());
        var row = Assert.Single(report.RootElement.GetProperty("results").EnumerateArray());
        var single = row.GetProperty("single_tokens_per_second").GetDouble();
        var both = row.GetProperty("tokens_per_second").GetDouble();
        Assert.True(single > 0 && both > 0, result.Out);
        Assert.Equal(both / (2 * single), row.GetProperty("scaling_efficiency").GetDouble(), 9);
        Assert.Equal(2, row.GetProperty("devices").GetInt32());
    }

    [Fact]
    public void BenchTrainUnderMpirun_RankZeroReportsTwoRanks()
    {
        var mpi = MpiRun.Get("openmpi");
        mpi.SkipIfMissing();
        using var job = new L2LJob();
        string rank0 = job.NewDirectory("rank0"), rank1 = job.NewDirectory("rank1");
        var result = job.RunRanks(mpi, [rank0, rank1], $"bench train --config {job.Config} --seq 8 --device cpu --micro-batches 1 --steps 2 --warmup 1 --json --out scaling.json");
        Assert.True(result.ExitCode == 0, result.ToString());
        using var report = System.Text.Json.JsonDocument.Parse(result.Out); // one report: rank 1 prints nothing
        Assert.Equal(2, report.RootElement.GetProperty("ranks").GetInt32());
        var row = Assert.Single(report.RootElement.GetProperty("results").EnumerateArray());
        Assert.True(row.GetProperty("single_tokens_per_second").GetDouble() > 0, result.Out);
        Assert.Equal(row.GetProperty("tokens_per_second").GetDouble() / (2 * row.GetProperty("single_tokens_per_second").GetDouble()),
            row.GetProperty("scaling_efficiency").GetDouble(), 9);
        Assert.Equal(["scaling.json"], L2LJob.Files(rank0));
        Assert.Empty(L2LJob.Files(rank1));
    }

    [Fact]
    public void ARankKilledMidRun_EndsEveryRankAndLeavesTheLastCheckpointIntact()
    {
        var mpi = MpiRun.Get("openmpi");
        mpi.SkipIfMissing();
        using var job = new L2LJob();
        string rank0 = job.NewDirectory("rank0"), rank1 = job.NewDirectory("rank1");
        var marker = $"L2L_TEST_JOB={Guid.NewGuid():N}";
        var timeout = TimeSpan.FromSeconds(20);
        var environment = new Dictionary<string, string> { ["L2L_TEST_JOB"] = marker["L2L_TEST_JOB=".Length..], ["L2L_MPI_TIMEOUT"] = "20" };
        var metrics = Path.Combine(rank0, "m.jsonl");
        var checkpoint = Path.Combine(rank0, "ck");
        Dictionary<string, string>? atKill = null;
        var killedAt = TimeSpan.Zero;
        var clock = Stopwatch.StartNew();
        var result = job.RunRanks(mpi, [rank0, rank1], $"{Args(job, 100000)} --log m.jsonl --save ck --save-every 2", environment, started: launcher =>
        {
            // Wait for step 3 (so the step-2 checkpoint is complete), then kill rank 1 outright, mid-step.
            while (!launcher.HasExited && clock.Elapsed < TimeSpan.FromSeconds(120) && (!File.Exists(metrics) || File.ReadAllLines(metrics).Length < 3))
                Thread.Sleep(20);
            var pid = L2LJob.FindRank(marker, 1);
            Assert.True(pid is not null, "rank 1 of the job was not found in /proc");
            Process.GetProcessById(pid.Value).Kill();
            killedAt = clock.Elapsed;
            // Rank 0 may be in the middle of swapping a save in until the launcher ends it: read once the directory is whole.
            for (var attempt = 0; atKill is null && attempt < 100; attempt++)
            {
                try
                {
                    atKill = Hashes(checkpoint);
                }
                catch (Exception e) when (e is IOException or InvalidDataException or UnauthorizedAccessException)
                {
                    Thread.Sleep(20);
                }
            }
        });
        var ended = clock.Elapsed - killedAt;
        Assert.True(result.ExitCode != 0, result.ToString());
        Assert.True(ended < timeout, $"the job took {ended.TotalSeconds:0.0} s to end after the kill\n{result}");
        Assert.NotNull(atKill);

        // The last checkpoint is a whole one: loadable, at an even step of at least 2, finite; any save in flight either finished or left it as it was.
        var layout = Layout(checkpoint);
        var state = Checkpoint.LoadTrainingState(checkpoint, layout);
        Assert.True(state.Step >= 2 && state.Step % 2 == 0, $"step {state.Step}");
        var (_, weights) = Checkpoint.Load(checkpoint);
        Assert.All(weights, layer => Assert.All(layer, w => Assert.True(float.IsFinite(w))));
        Assert.Empty(L2LJob.Files(rank1));
        var after = Hashes(checkpoint);
        if (!after.SequenceEqual(atKill!))
            Assert.True(state.Step > long.Parse(atKill!.GetValueOrDefault("step", "0"), System.Globalization.CultureInfo.InvariantCulture), "the checkpoint changed but not by a later whole save");

        // A one-process run continues from it.
        var resumed = job.RunAlone(job.NewDirectory("resumed"), $"train --resume {checkpoint} --steps {state.Step + 1} --device cpu");
        Assert.True(resumed.ExitCode == 0, resumed.ToString());
    }

    [Fact]
    public void AnInterruptOfOneRank_StopsEveryRankAfterTheSameStep_AndRankZeroSaves()
    {
        var mpi = MpiRun.Get("openmpi");
        mpi.SkipIfMissing();
        using var job = new L2LJob();
        string rank0 = job.NewDirectory("rank0"), rank1 = job.NewDirectory("rank1");
        var marker = $"L2L_TEST_JOB={Guid.NewGuid():N}";
        var environment = new Dictionary<string, string> { ["L2L_TEST_JOB"] = marker["L2L_TEST_JOB=".Length..], ["L2L_MPI_TIMEOUT"] = "20" };
        var metrics = Path.Combine(rank0, "m.jsonl");
        var clock = Stopwatch.StartNew();
        var result = job.RunRanks(mpi, [rank0, rank1], $"{Args(job, 100000)} --log m.jsonl --save ck", environment, started: launcher =>
        {
            while (!launcher.HasExited && clock.Elapsed < TimeSpan.FromSeconds(120) && (!File.Exists(metrics) || File.ReadAllLines(metrics).Length < 2))
                Thread.Sleep(20);
            var pid = L2LJob.FindRank(marker, 1);
            Assert.True(pid is not null, "rank 1 of the job was not found in /proc");
            using var signal = Process.Start("kill", ["-INT", pid.Value.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
            signal.WaitForExit();
        });
        Assert.True(result.ExitCode == 130, result.ToString());
        var logged = L2LJob.Losses(metrics);
        var last = logged[^1].Step;
        Assert.Contains($"interrupted: stopped after step {last} of 100000.", result.Out);
        Assert.Contains("resume with: mpirun -np 2 l2l train", result.Out);
        Assert.Equal(last, Checkpoint.LoadTrainingState(Path.Combine(rank0, "ck"), Layout(Path.Combine(rank0, "ck"))).Step);
        Assert.Empty(L2LJob.Files(rank1));
    }

    private static void AssertSameLosses((long Step, double Loss)[] expected, (long Step, double Loss)[] actual)
    {
        Assert.Equal(expected.Select(e => e.Step), actual.Select(a => a.Step));
        for (var i = 0; i < expected.Length; i++)
            Assert.True(Math.Abs(expected[i].Loss - actual[i].Loss) <= LossTolerance * Math.Max(1, Math.Abs(expected[i].Loss)),
                $"step {expected[i].Step}: loss {actual[i].Loss:R}, expected {expected[i].Loss:R}");
    }

    private static void AssertSameWeights(string expectedDir, string actualDir)
    {
        var (_, expected) = Checkpoint.Load(expectedDir);
        var (_, actual) = Checkpoint.Load(actualDir);
        Assert.Equal(expected.Length, actual.Length);
        var worst = 0.0;
        for (var l = 0; l < expected.Length; l++)
        for (var i = 0; i < expected[l].Length; i++)
            worst = Math.Max(worst, Math.Abs(expected[l][i] - actual[l][i]));
        Assert.True(worst <= WeightTolerance, $"largest weight difference {worst:G3}");
    }

    // The run header is wrapped at the console's width; its words are what matter.
    private static string Unwrapped(string text) => System.Text.RegularExpressions.Regex.Replace(text, @"\s*\n\s*", " ");

    private static ModelLayout Layout(string checkpoint) => new(Checkpoint.Load(checkpoint).Config);

    // The checkpoint's files and their hashes, plus its step under "step".
    private static Dictionary<string, string> Hashes(string dir)
    {
        var all = L2LJob.Files(dir).ToDictionary(f => f, f => Convert.ToHexString(System.Security.Cryptography.SHA256.HashData(File.ReadAllBytes(Path.Combine(dir, f)))));
        all["step"] = Checkpoint.LoadTrainingState(dir, Layout(dir)).Step.ToString(System.Globalization.CultureInfo.InvariantCulture);
        return all;
    }
}
