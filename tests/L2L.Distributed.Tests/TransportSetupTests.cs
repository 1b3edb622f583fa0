// Launcher detection, the split of 64-bit counts into int-sized calls, and the MPICH handles against the installed mpi.h.
using System.Globalization;
using System.Text.RegularExpressions;
using L2L.Training.Distributed;
using Xunit;

namespace L2L.Distributed.Tests;

public sealed class TransportSetupTests
{
    [Fact]
    public void OpenMpiEnvironment_PicksLibmpi40()
    {
        var launch = MpiLaunch.Detect(Env(("OMPI_COMM_WORLD_SIZE", "4"), ("OMPI_COMM_WORLD_RANK", "1"), ("PMIX_RANK", "1")));
        Assert.Equal(MpiLauncher.OpenMpi, launch.Launcher);
        Assert.Equal(4, launch.WorldSizeHint);
        Assert.Equal(["libmpi.so.40"], launch.LibraryCandidates);
        Assert.True(launch.IsDistributed);
    }

    [Fact]
    public void PmiEnvironment_PicksTheMpichAbiLibraries()
    {
        var launch = MpiLaunch.Detect(Env(("PMI_RANK", "0"), ("PMI_SIZE", "2")));
        Assert.Equal(MpiLauncher.Pmi, launch.Launcher);
        Assert.Equal(2, launch.WorldSizeHint);
        Assert.Equal(["libmpich.so.12", "libmpi.so.12"], launch.LibraryCandidates);
    }

    [Fact]
    public void PmixWithoutOpenMpi_TriesBothFamilies()
    {
        var launch = MpiLaunch.Detect(Env(("PMIX_RANK", "3")));
        Assert.Equal(MpiLauncher.Pmix, launch.Launcher);
        Assert.Null(launch.WorldSizeHint);
        Assert.Equal(["libmpi.so.40", "libmpich.so.12", "libmpi.so.12"], launch.LibraryCandidates);
    }

    [Fact]
    public void NoLauncher_IsASingleProcess()
    {
        var launch = MpiLaunch.Detect(Env());
        Assert.Equal(MpiLauncher.None, launch.Launcher);
        Assert.False(launch.IsDistributed);
    }

    [Fact]
    public void LibraryOverride_ReplacesTheCandidates()
    {
        var launch = MpiLaunch.Detect(Env(("OMPI_COMM_WORLD_SIZE", "2"), ("L2L_MPI_LIBRARY", " /opt/mpi/lib/libmpi.so.40 ")));
        Assert.Equal(MpiLauncher.OpenMpi, launch.Launcher);
        Assert.Equal(["/opt/mpi/lib/libmpi.so.40"], launch.LibraryCandidates);
    }

    [Fact]
    public void MissingLibrary_IsOneClearError()
    {
        var launch = MpiLaunch.Detect(Env(("L2L_MPI_LIBRARY", "/nonexistent/libmpi.so")));
        var e = Assert.Throws<MpiException>(() => launch.LoadLibrary());
        Assert.StartsWith("No MPI library could be loaded (tried /nonexistent/libmpi.so); install Open MPI or MPICH, or set L2L_MPI_LIBRARY", e.Message);
    }

    [Fact]
    public void NotAnMpiLibrary_IsRejected()
    {
        var e = Assert.Throws<MpiException>(() => MpiLibrary.Load("libc.so.6"));
        Assert.Contains("does not export MPI_Init_thread", e.Message);
    }

    [Theory]
    [InlineData(0L, 5L, 0L)]
    [InlineData(1L, 5L, 1L)]
    [InlineData(5L, 5L, 1L)]
    [InlineData(37L, 5L, 8L)]
    [InlineData(5_000_000_000L, int.MaxValue, 3L)] // a 20 GB layer of floats: over the int count of one MPI call
    [InlineData((long)int.MaxValue + 1, int.MaxValue, 2L)]
    public void Pieces_CoverTheBufferExactlyWithinTheLimit(long count, long max, long expectedPieces)
    {
        long pieces = CallPieces.Count(count, max);
        Assert.Equal(expectedPieces, pieces);
        long next = 0;
        for (long p = 0; p < pieces; p++)
        {
            var (offset, length) = CallPieces.Piece(count, max, p);
            Assert.Equal(next, offset);
            Assert.InRange(length, 1, max);
            next = offset + length;
        }
        Assert.Equal(count, next);
    }

    [Fact]
    public void MpichHandles_MatchTheInstalledHeader()
    {
        string? header = new[] { "/usr/include/x86_64-linux-gnu/mpich/mpi.h", "/usr/include/aarch64-linux-gnu/mpich/mpi.h", "/usr/include/mpich/mpi.h" }
            .FirstOrDefault(File.Exists);
        if (header is null) Assert.Skip("MPICH's mpi.h is not installed (Debian: apt-get install libmpich-dev), so the handle constants were not checked.");
        string text = File.ReadAllText(header);
        Assert.Equal(MpichHandles.CommWorld, Define(text, "MPI_COMM_WORLD"));
        Assert.Equal(MpichHandles.Float, Define(text, "MPI_FLOAT"));
        Assert.Equal(MpichHandles.Byte, Define(text, "MPI_BYTE"));
        Assert.Equal(MpichHandles.Sum, Define(text, "MPI_SUM"));
        Assert.Matches(@"#define\s+MPI_IN_PLACE\s+\(void \*\) -1", text);
    }

    [Fact]
    public void OpenMpiHandles_AreTheExportedObjectsTheHeaderNames()
    {
        string? header = new[] { "/usr/lib/x86_64-linux-gnu/openmpi/include/mpi.h", "/usr/lib/aarch64-linux-gnu/openmpi/include/mpi.h", "/usr/include/openmpi/mpi.h" }
            .FirstOrDefault(File.Exists);
        if (header is null) Assert.Skip("Open MPI's mpi.h is not installed (Debian: apt-get install libopenmpi-dev), so the handle names were not checked.");
        string text = File.ReadAllText(header);
        // Open MPI defines each handle as the address of an exported object; these are the ones the binding resolves.
        foreach (var (handle, symbol) in new[] { ("MPI_COMM_WORLD", "ompi_mpi_comm_world"), ("MPI_FLOAT", "ompi_mpi_float"), ("MPI_BYTE", "ompi_mpi_byte"), ("MPI_SUM", "ompi_mpi_op_sum") })
            Assert.Matches($@"#define\s+{handle}\s+OMPI_PREDEFINED_GLOBAL\(\s*MPI_\w+,\s*{symbol}\)", text);
        Assert.Matches(@"#define\s+MPI_IN_PLACE\s+\(\(void \*\) 1\)", text);
    }

    private static int Define(string header, string name)
    {
        var m = Regex.Match(header, $@"#define\s+{name}\s+\(?\s*\(MPI_\w+\)\s*\(?\s*0x([0-9a-fA-F]+)");
        Assert.True(m.Success, $"{name} not found in mpi.h");
        return int.Parse(m.Groups[1].Value, NumberStyles.HexNumber, CultureInfo.InvariantCulture);
    }

    private static Func<string, string?> Env(params (string Name, string Value)[] variables)
    {
        var map = variables.ToDictionary(v => v.Name, v => v.Value);
        return name => map.GetValueOrDefault(name);
    }
}
