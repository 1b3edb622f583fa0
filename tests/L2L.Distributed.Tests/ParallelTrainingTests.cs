// Data-parallel training over two MPI ranks: each rank checks itself against a one-process run of the same global batch.
using Xunit;

namespace L2L.Distributed.Tests;

public sealed class ParallelTrainingTests
{
    // The driver's tolerance (1e-5 absolute / 1e-4 relative) is the in-process tests': the ranks group the micro-batches'
    // gradient sums differently from one process, which changes the last bits; see ParallelDeviceTests.

    [Theory]
    [InlineData("openmpi", "device", 1)]
    [InlineData("openmpi", "host", 1)]
    [InlineData("openmpi", "device", 2)]
    [InlineData("mpich", "device", 1)]
    public void TwoRanksMatchOneProcessOnTheSameGlobalBatch(string family, string placement, int devicesPerRank)
    {
        // With 2 devices per rank: two CPU accelerators in each of the two processes, 4 replicas in all.
        var result = MpiRun.Get(family).Run(2, "train-parity", placement, devicesPerRank.ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.True(result.ExitCode == 0, result.ToString());
        string? hash = null;
        for (int r = 0; r < 2; r++)
        {
            string[] lines = result.LinesOf(r);
            string line = Assert.Single(lines, l => l.Contains("weights-hash=", StringComparison.Ordinal));
            Assert.Contains("loss-within-tolerance=True weights-within-tolerance=True", line);
            Assert.Contains(lines, l => l.Contains("globally-clipped-within-tolerance=True", StringComparison.Ordinal));
            // Every rank ends with the same bits: the all-reduce hands each the same rank-order sum.
            string mine = line[(line.IndexOf("weights-hash=", StringComparison.Ordinal) + 13)..].Split(' ')[0];
            hash ??= mine;
            Assert.Equal(hash, mine);
            Assert.Contains($"rank {r}/2: PASS", lines);
        }
    }

    [Fact]
    public void ShardedParamServerMatchesUnshardedAndHoldsItsShare()
    {
        var result = MpiRun.Get("openmpi").Run(2, "train-sharded");
        Assert.True(result.ExitCode == 0, result.ToString());
        for (int r = 0; r < 2; r++)
        {
            string[] lines = result.LinesOf(r);
            string bytes = Assert.Single(lines, l => l.Contains("predicted-state-bytes=", StringComparison.Ordinal));
            var fields = bytes.Split(' ').Select(f => f.Split('=')).Where(f => f.Length == 2).ToDictionary(f => f[0], f => f[1]);
            Assert.Equal(fields["predicted-state-bytes"], fields["state-bytes"]);
            Assert.Equal(fields["predicted-host-bytes"], fields["host-bytes"]);
            // Two ranks: each holds half of the optimizer state (the tiny model's layers split evenly).
            Assert.Equal(long.Parse(fields["unsharded-state-bytes"]), 2 * long.Parse(fields["state-bytes"]));
            Assert.Contains(lines, l => l.Contains("loss-within-tolerance=True weights-within-tolerance=True state-within-tolerance=True", StringComparison.Ordinal));
            // Per-layer clipping, sharded and not, equals one process's (each layer's norm summed over the ranks' shards).
            Assert.Contains("layer-clipped-within-tolerance=True clipping-changed-the-weights=True", lines.Single(l => l.Contains("layer-clipped", StringComparison.Ordinal)));
            Assert.Contains($"rank {r}/2: PASS", lines);
        }
    }

    [Fact]
    public void ShardedSnapshotResumesOnTwoRanksAndInOneProcess()
    {
        var result = MpiRun.Get("openmpi").Run(2, "train-resume");
        Assert.True(result.ExitCode == 0, result.ToString());
        for (int r = 0; r < 2; r++)
        {
            string[] lines = result.LinesOf(r);
            Assert.Contains(lines, l => l.Contains("snapshot-step=3 resumed-on-ranks-identical=True resumed-alone-within-tolerance=True", StringComparison.Ordinal));
            Assert.Contains($"rank {r}/2: PASS", lines);
        }
    }
}
