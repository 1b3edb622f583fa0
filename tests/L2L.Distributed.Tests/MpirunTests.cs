// Runs the collectives under real mpirun jobs (Open MPI and MPICH) and checks every rank's results against serial sums.
using System.Globalization;
using System.Text.RegularExpressions;
using L2L.Distributed.Driver;
using Xunit;

namespace L2L.Distributed.Tests;

public sealed partial class MpirunTests
{
    [Theory]
    [InlineData("openmpi")]
    [InlineData("mpich")]
    public void Info_LoadsTheLauncherLibraryAndBroadcasts(string family)
    {
        var result = MpiRun.Get(family).Run(2, "info");
        Assert.True(result.ExitCode == 0, result.ToString());
        string abi = family == "openmpi" ? "abi=OpenMpi" : "abi=Mpich";
        for (int r = 0; r < 2; r++)
        {
            string[] lines = result.LinesOf(r);
            Assert.Contains(lines, l => l.Contains(abi, StringComparison.Ordinal) && l.Contains("thread-level=3", StringComparison.Ordinal));
            Assert.Contains(lines, l => l.Contains("broadcast=\"hello from rank 0\"", StringComparison.Ordinal));
            Assert.Contains($"rank {r}/2: PASS", lines);
        }
    }

    [Theory]
    [InlineData("openmpi", 2)]
    [InlineData("openmpi", 3)]
    [InlineData("mpich", 2)]
    [InlineData("mpich", 3)]
    public void AllReduce_EveryRankHoldsTheRankOrderSerialSum(string family, int ranks)
    {
        const int count = 100_003; // not a multiple of 2 or 3, so the padded piece is exercised
        var result = MpiRun.Get(family).Run(ranks, "allreduce", count.ToString(CultureInfo.InvariantCulture));
        Assert.True(result.ExitCode == 0, result.ToString());

        // The expected bits, formed here, in this process, in rank order: ((x0 + x1) + x2).
        string expected = ScenarioData.Hash(ScenarioData.SerialSum(ranks, count, 0, reverse: false)).ToString("x16", CultureInfo.InvariantCulture);
        for (int r = 0; r < ranks; r++)
        {
            string line = Assert.Single(result.LinesOf(r), l => l.Contains("hash=", StringComparison.Ordinal));
            Assert.Contains($"hash={expected}", line);
            Assert.Contains("mismatches-vs-rank-order-serial=0 ", line);
            if (ranks >= 3)
            {
                // With three ranks the order changes the rounding, so matching the rank-order sum means something.
                int differs = int.Parse(OrderDiffers().Match(line).Groups[1].Value, CultureInfo.InvariantCulture);
                Assert.True(differs > 0, line);
            }
        }
    }

    [Theory]
    [InlineData("openmpi")]
    [InlineData("mpich")]
    public void ReduceScatterThenAllGather_RoundTripsToTheSerialSum(string family)
    {
        var result = MpiRun.Get(family).Run(2, "roundtrip", "4099");
        Assert.True(result.ExitCode == 0, result.ToString());
        for (int r = 0; r < 2; r++)
        {
            Assert.Contains(result.LinesOf(r), l => l.Contains("reduce-scatter-mismatches=0 all-gather-mismatches=0 in-place-all-gather-mismatches=0", StringComparison.Ordinal));
            Assert.Contains($"rank {r}/2: PASS", result.LinesOf(r));
        }
    }

    [Theory]
    [InlineData("openmpi")]
    [InlineData("mpich")]
    public void BuffersOverTheCallLimit_AreSplitIntoPieces(string family)
    {
        // The driver caps one MPI call at 5 elements, standing in for int.MaxValue.
        var result = MpiRun.Get(family).Run(2, "chunked");
        Assert.True(result.ExitCode == 0, result.ToString());
        for (int r = 0; r < 2; r++)
        {
            string line = Assert.Single(result.LinesOf(r), l => l.Contains("max-per-call=5", StringComparison.Ordinal));
            // 37 floats over 2 ranks, 10 per piece: 4 pieces of one MPI_Alltoall and one MPI_Allgather each.
            Assert.Contains("all-reduce count=37 mismatches=0 calls=8/8;", line);
            Assert.Contains("reduce-scatter block=13 mismatches=0 calls=3/3;", line);
            Assert.Contains("all-gather mismatches=0 calls=3/3;", line);
            Assert.Contains("broadcast bytes=23 mismatches=0 calls=5/5", line);
        }
    }

    [Theory]
    [InlineData("openmpi")]
    [InlineData("mpich")]
    public void RankThatExitsMidJob_EndsEveryRankWithAnError(string family)
    {
        var result = MpiRun.Get(family).Run(2, "rank-exits");
        Assert.True(result.ExitCode != 0, result.ToString());
        Assert.DoesNotContain(result.LinesOf(0), l => l.Contains("returned", StringComparison.Ordinal));
        Assert.Contains(result.LinesOf(0), l => l.Contains("entering the all-reduce", StringComparison.Ordinal));
        Assert.True(result.Elapsed < TimeSpan.FromSeconds(60), result.ToString());
    }

    [Theory]
    [InlineData("openmpi")]
    [InlineData("mpich")]
    public void RankThatHangs_TimesOutAndEndsEveryRank(string family)
    {
        // Rank 1 sleeps 300 s; only the 3 s watchdog on rank 0 can end the job this early.
        var result = MpiRun.Get(family).Run(2, "rank-hangs");
        Assert.True(result.ExitCode != 0, result.ToString());
        Assert.Contains("MPI_Alltoall on rank 0 of 2 did not complete within 3 s", result.Error);
        Assert.DoesNotContain(result.LinesOf(0), l => l.Contains("returned", StringComparison.Ordinal));
        Assert.True(result.Elapsed < TimeSpan.FromSeconds(60), result.ToString());
    }

    [Fact]
    public void LibraryOfTheOtherFamily_IsOneClearError()
    {
        // Open MPI's mpirun starting ranks that load MPICH: each rank would be a world of one, training alone.
        var openMpi = MpiRun.Get("openmpi");
        openMpi.SkipIfMissing();
        if (!File.Exists("/usr/lib/x86_64-linux-gnu/libmpich.so.12") && !File.Exists("/usr/lib/aarch64-linux-gnu/libmpich.so.12"))
            Assert.Skip("libmpich.so.12 is not installed (Debian: apt-get install mpich), so the mismatch could not be staged.");
        var result = openMpi.Run(2, "info", [], new Dictionary<string, string> { ["L2L_MPI_LIBRARY"] = "libmpich.so.12" });
        Assert.True(result.ExitCode != 0, result.ToString());
        Assert.Contains("error: The launcher started 2 ranks but libmpich.so.12 (Mpich ABI) sees a world of 1", result.Error);
        Assert.DoesNotContain("PASS", result.Out);
    }

    [GeneratedRegex(@"elements-where-reverse-order-differs=(\d+)")]
    private static partial Regex OrderDiffers();
}
