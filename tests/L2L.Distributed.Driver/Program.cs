// Runs one collective scenario on every rank of an MPI job and prints what it saw; the distributed tests launch it under mpirun.
using System.Globalization;
using L2L.Training.Distributed;

namespace L2L.Distributed.Driver;

internal static unsafe class Program
{
    private static int Main(string[] args)
    {
        if (args.Length < 1)
        {
            Console.Error.WriteLine("usage: L2L.Distributed.Driver <info|allreduce|roundtrip|chunked|rank-exits|rank-hangs|train-parity [device|host] [devices per rank]|train-sharded|train-resume|bench-train DEVICES STEPS [host]> [count]");
            return 2;
        }
        string scenario = args[0];
        if (scenario == "bench-train")
            return BenchTrain.Run(args);
        var options = MpiOptions.FromEnvironment() with
        {
            MaxElementsPerCall = scenario == "chunked" ? 5 : int.MaxValue,
            CollectiveTimeout = TimeSpan.FromSeconds(60),
        };
        MpiCollectives mpi;
        try
        {
            mpi = MpiCollectives.Initialize(MpiLaunch.Detect(), options);
        }
        catch (MpiException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return 2;
        }
        using var owned = mpi;
        var run = new Scenario(mpi);
        bool ok = scenario switch
        {
            "info" => run.Info(),
            "allreduce" => run.AllReduce(args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 100_003),
            "roundtrip" => run.RoundTrip(args.Length > 1 ? int.Parse(args[1], CultureInfo.InvariantCulture) : 4_099),
            "chunked" => run.Chunked(),
            "rank-exits" => run.RankExits(),
            "rank-hangs" => run.RankHangs(),
            "train-parity" => new TrainingScenarios(mpi, run.Say).Parity(args.Length > 1 && args[1] == "host" ? L2L.Training.StashPlacement.Host : L2L.Training.StashPlacement.Device,
                args.Length > 2 ? int.Parse(args[2], CultureInfo.InvariantCulture) : 1),
            "train-sharded" => new TrainingScenarios(mpi, run.Say).Sharded(),
            "train-resume" => new TrainingScenarios(mpi, run.Say).Resume(),
            _ => throw new ArgumentException($"Unknown scenario {scenario}."),
        };
        run.Say(ok ? "PASS" : "FAIL");
        return ok ? 0 : 1;
    }
}

internal sealed unsafe class Scenario(MpiCollectives mpi)
{
    private int R => mpi.WorldSize;

    public void Say(string text)
    {
        Console.Out.WriteLine($"rank {mpi.Rank}/{R}: {text}");
        Console.Out.Flush();
    }

    public bool Info()
    {
        Say($"library={mpi.Library.Path} abi={mpi.Library.Abi} thread-level={mpi.ThreadLevel} version=\"{mpi.Version}\"");
        mpi.Barrier();
        var message = new byte[32];
        if (mpi.Rank == 0) "hello from rank 0"u8.CopyTo(message);
        mpi.Broadcast(message, root: 0);
        string received = System.Text.Encoding.ASCII.GetString(message).TrimEnd('\0');
        Say($"broadcast=\"{received}\"");
        return received == "hello from rank 0";
    }

    public bool AllReduce(int count)
    {
        float[] buffer = ScenarioData.Values(mpi.Rank, count, 0);
        mpi.AllReduceSum(buffer);
        float[] serial = ScenarioData.SerialSum(R, count, 0, reverse: false);
        float[] reverse = ScenarioData.SerialSum(R, count, 0, reverse: true);
        int mismatches = Mismatches(buffer, serial);
        int orderMatters = Mismatches(serial, reverse);
        bool agree = AgreesWithRankZero(buffer);
        Say($"count={count} hash={ScenarioData.Hash(buffer):x16} mismatches-vs-rank-order-serial={mismatches} elements-where-reverse-order-differs={orderMatters} agrees-with-rank0={agree}");
        return mismatches == 0 && agree;
    }

    public bool RoundTrip(int block)
    {
        // Reduce-scatter a buffer of R blocks, then all-gather the reduced blocks: the result is the all-reduce.
        float[] send = ScenarioData.Values(mpi.Rank, block * R, 1);
        float[] mine = new float[block];
        mpi.ReduceScatterBlockSum(send, mine);
        float[] serial = ScenarioData.SerialSum(R, block * R, 1, reverse: false);
        int scatterMismatches = Mismatches(mine, serial.AsSpan(mpi.Rank * block, block).ToArray());
        float[] all = new float[block * R];
        mpi.AllGather(mine, all);
        int gatherMismatches = Mismatches(all, serial);
        // In place: this rank's block already sits inside the gather buffer.
        float[] inPlace = new float[block * R];
        mine.CopyTo(inPlace, mpi.Rank * block);
        fixed (float* p = inPlace) mpi.AllGather(p + mpi.Rank * block, p, block);
        int inPlaceMismatches = Mismatches(inPlace, serial);
        Say($"block={block} reduce-scatter-mismatches={scatterMismatches} all-gather-mismatches={gatherMismatches} in-place-all-gather-mismatches={inPlaceMismatches}");
        return scatterMismatches == 0 && gatherMismatches == 0 && inPlaceMismatches == 0;
    }

    public bool Chunked()
    {
        // One MPI call may move 5 elements per rank, so every collective below must be split into pieces.
        const int max = 5, count = 37, block = 13, bytes = 23;
        long before = mpi.NativeCallCount;
        bool ok = true;

        float[] buffer = ScenarioData.Values(mpi.Rank, count, 2);
        mpi.AllReduceSum(buffer);
        int a = Mismatches(buffer, ScenarioData.SerialSum(R, count, 2, reverse: false));
        long allReduceCalls = mpi.NativeCallCount - before;
        long expectedAllReduce = 2 * CallPieces.Count(count, (long)max * R);

        before = mpi.NativeCallCount;
        float[] send = ScenarioData.Values(mpi.Rank, block * R, 3);
        float[] mine = new float[block];
        mpi.ReduceScatterBlockSum(send, mine);
        float[] serial = ScenarioData.SerialSum(R, block * R, 3, reverse: false);
        int b = Mismatches(mine, serial.AsSpan(mpi.Rank * block, block).ToArray());
        long scatterCalls = mpi.NativeCallCount - before;

        before = mpi.NativeCallCount;
        float[] all = new float[block * R];
        mpi.AllGather(mine, all);
        int c = Mismatches(all, serial);
        long gatherCalls = mpi.NativeCallCount - before;

        before = mpi.NativeCallCount;
        var message = new byte[bytes];
        if (mpi.Rank == 0) for (int i = 0; i < bytes; i++) message[i] = (byte)(7 * i + 1);
        mpi.Broadcast(message, root: 0);
        int d = 0;
        for (int i = 0; i < bytes; i++) if (message[i] != (byte)(7 * i + 1)) d++;
        long bcastCalls = mpi.NativeCallCount - before;

        long expectedPieces = CallPieces.Count(block, max);
        ok &= a == 0 && b == 0 && c == 0 && d == 0;
        ok &= allReduceCalls == expectedAllReduce && scatterCalls == expectedPieces && gatherCalls == expectedPieces && bcastCalls == CallPieces.Count(bytes, max);
        Say($"max-per-call={max} all-reduce count={count} mismatches={a} calls={allReduceCalls}/{expectedAllReduce}; " +
            $"reduce-scatter block={block} mismatches={b} calls={scatterCalls}/{expectedPieces}; all-gather mismatches={c} calls={gatherCalls}/{expectedPieces}; " +
            $"broadcast bytes={bytes} mismatches={d} calls={bcastCalls}/{CallPieces.Count(bytes, max)}");
        return ok;
    }

    public bool RankExits()
    {
        mpi.Barrier();
        mpi.CollectiveTimeout = TimeSpan.FromSeconds(10);
        // The other ranks announce the all-reduce before the last rank may exit (the second barrier orders it),
        // so the launcher cannot end them before their line is out.
        if (mpi.Rank != R - 1)
            Say("entering the all-reduce (timeout 10 s)");
        mpi.Barrier();
        if (mpi.Rank == R - 1)
        {
            Say("exiting with code 3 before the all-reduce, without MPI_Finalize");
            Environment.Exit(3);
        }
        float[] buffer = ScenarioData.Values(mpi.Rank, 1000, 4);
        mpi.AllReduceSum(buffer);
        Say("all-reduce returned although a rank had exited");
        return false;
    }

    public bool RankHangs()
    {
        mpi.Barrier();
        mpi.CollectiveTimeout = TimeSpan.FromSeconds(3);
        if (mpi.Rank == R - 1)
        {
            Say("sleeping for 300 s instead of joining the all-reduce");
            Thread.Sleep(TimeSpan.FromSeconds(300));
            return false;
        }
        Say("entering the all-reduce (timeout 3 s)");
        float[] buffer = ScenarioData.Values(mpi.Rank, 1000, 4);
        mpi.AllReduceSum(buffer);
        Say("all-reduce returned although a rank never joined");
        return false;
    }

    private bool AgreesWithRankZero(float[] buffer)
    {
        var hash = BitConverter.GetBytes(ScenarioData.Hash(buffer));
        var root = (byte[])hash.Clone();
        mpi.Broadcast(root, root: 0);
        return hash.AsSpan().SequenceEqual(root);
    }

    private static int Mismatches(float[] a, float[] b)
    {
        if (a.Length != b.Length) return Math.Max(a.Length, b.Length);
        int n = 0;
        for (int i = 0; i < a.Length; i++) if (BitConverter.SingleToInt32Bits(a[i]) != BitConverter.SingleToInt32Bits(b[i])) n++;
        return n;
    }
}

/// <summary>The inputs of the scenarios and the results they must produce, shared with the tests.</summary>
public static class ScenarioData
{
    /// <summary>The sum every rank must hold: element by element, rank 0's value plus rank 1's plus … (or the reverse order, to show order matters).</summary>
    public static float[] SerialSum(int ranks, int count, int salt, bool reverse)
    {
        float[] sum = Values(reverse ? ranks - 1 : 0, count, salt);
        for (int k = 1; k < ranks; k++)
        {
            float[] next = Values(reverse ? ranks - 1 - k : k, count, salt);
            for (int i = 0; i < count; i++) sum[i] += next[i];
        }
        return sum;
    }

    /// <summary>Rank <paramref name="rank"/>'s input: values of mixed sign spanning 2^-20..2^20, so the rounding of a sum depends on its order.</summary>
    public static float[] Values(int rank, int count, int salt)
    {
        var values = new float[count];
        for (int i = 0; i < count; i++)
        {
            ulong h = Mix((ulong)rank * 0x9E3779B97F4A7C15UL ^ (ulong)i * 0xC2B2AE3D27D4EB4FUL ^ (ulong)salt << 56);
            float mantissa = 1f + (h & 0xFFFFFF) / (float)(1 << 24);
            int exponent = (int)((h >> 24) % 41) - 20;
            values[i] = ((h >> 40) & 1) == 0 ? MathF.ScaleB(mantissa, exponent) : -MathF.ScaleB(mantissa, exponent);
        }
        return values;
    }

    private static ulong Mix(ulong z)
    {
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBUL;
        return z ^ (z >> 31);
    }

    /// <summary>FNV-1a over the float bits: one number that differs when any bit of the result does.</summary>
    public static ulong Hash(float[] values)
    {
        ulong h = 1469598103934665603UL;
        foreach (float v in values) h = (h ^ (uint)BitConverter.SingleToInt32Bits(v)) * 1099511628211UL;
        return h;
    }
}
