// Host collectives over MPI: deterministic (rank-ordered) sums built from MPI_Alltoall and MPI_Allgather, chunked and watched.
using System.Runtime.InteropServices;

namespace L2L.Training.Distributed;

/// <summary>Settings of <see cref="MpiCollectives"/>.</summary>
public sealed record MpiOptions
{
    /// <summary>Environment variable overriding <see cref="CollectiveTimeout"/>, in seconds.</summary>
    public const string TimeoutVariable = "L2L_MPI_TIMEOUT";

    /// <summary>Default collective timeout: long enough for a large layer on a slow network, short enough that a dead job is noticed.</summary>
    public static readonly TimeSpan DefaultTimeout = TimeSpan.FromSeconds(300);

    /// <summary>Longest time one MPI call may take before every rank is ended with <see cref="MpiCollectives.TimeoutExitCode"/>.</summary>
    public TimeSpan CollectiveTimeout { get; init; } = DefaultTimeout;

    /// <summary>Most elements one MPI call moves per rank (MPI counts are int); larger buffers are split into pieces.</summary>
    public int MaxElementsPerCall { get; init; } = int.MaxValue;

    /// <summary>Threads for the local rank-ordered sums; ≤ 0 uses every core.</summary>
    public int ReductionThreads { get; init; }

    /// <summary>Defaults, with the timeout taken from <see cref="TimeoutVariable"/> when set.</summary>
    public static MpiOptions FromEnvironment()
    {
        string? value = Environment.GetEnvironmentVariable(TimeoutVariable);
        if (string.IsNullOrWhiteSpace(value)) return new MpiOptions();
        if (!double.TryParse(value, System.Globalization.NumberStyles.Float, System.Globalization.CultureInfo.InvariantCulture, out double seconds) || !(seconds > 0))
            throw new MpiException($"{TimeoutVariable}={value} is not a positive number of seconds.");
        return new MpiOptions { CollectiveTimeout = TimeSpan.FromSeconds(seconds) };
    }
}

/// <summary>
/// <see cref="IHostCollectives"/> over MPI_COMM_WORLD of a directly bound MPI library.
/// </summary>
/// <remarks>
/// Summation order. MPI_Allreduce and MPI_Reduce_scatter leave the order of a reduction to the library (it changes with
/// the algorithm, the message size and the number of ranks), so sums here never go through an MPI op. A reduce-scatter is an
/// MPI_Alltoall, which moves data only, followed by a local sum of the received blocks in rank order 0, 1, …, R−1; an
/// all-reduce is that reduce-scatter followed by MPI_Allgather. Every rank thus holds, bit for bit, the serial sum
/// ((x₀ + x₁) + x₂) + … of the ranks' values, for Open MPI and MPICH alike.
/// Timeout. Each MPI call is watched (<see cref="MpiOptions.CollectiveTimeout"/>); when one overruns, the process writes
/// an error line and calls MPI_Abort, and the launcher ends every rank with a non-zero exit code.
/// </remarks>
public sealed unsafe class MpiCollectives : IHostCollectives
{
    /// <summary>Exit code of every rank when a collective times out (as timeout(1) uses).</summary>
    public const int TimeoutExitCode = 124;

    private static int s_initialized;
    private readonly MpiLibrary _library;
    private readonly CollectiveWatchdog _watchdog;
    private readonly int _maxPerCall;
    private readonly int _reductionThreads;
    private readonly object _callGate = new();
    private readonly nint[] _sources;
    private Scratch _block, _pack, _received; // this rank's block, packed/padded pieces, what MPI_Alltoall receives
    private long _nativeCalls;
    private bool _disposed;

    private MpiCollectives(MpiLibrary library, MpiOptions options)
    {
        _library = library;
        _maxPerCall = options.MaxElementsPerCall;
        _reductionThreads = options.ReductionThreads;
        ThreadLevel = library.InitThread(MpiLibrary.ThreadMultiple);
        Rank = library.CommWorldRank();
        WorldSize = library.CommWorldSize();
        Version = library.Version();
        _sources = new nint[WorldSize];
        _watchdog = new CollectiveWatchdog(options.CollectiveTimeout, code => _library.Abort(code), () => $"rank {Rank} of {WorldSize}");
    }

    /// <summary>
    /// Initializes MPI once per process with the library the environment points to (<see cref="MpiLaunch.Detect()"/>) and
    /// the options of <see cref="MpiOptions.FromEnvironment"/> unless given.
    /// </summary>
    public static MpiCollectives Initialize(MpiOptions? options = null) => Initialize(MpiLaunch.Detect(), options ?? MpiOptions.FromEnvironment());

    /// <summary>
    /// Loads the library <paramref name="launch"/> names, initializes MPI, and checks that the library sees the world the
    /// launcher started: a library of the other family would run each rank as a world of its own.
    /// </summary>
    public static MpiCollectives Initialize(MpiLaunch launch, MpiOptions options)
    {
        var mpi = Initialize(launch.LoadLibrary(), options);
        if (launch.WorldSizeHint is int expected && expected != mpi.WorldSize)
        {
            string library = $"{mpi.Library.Path} ({mpi.Library.Abi} ABI)";
            mpi.Dispose();
            throw new MpiException(
                $"The launcher started {expected} ranks but {library} sees a world of {mpi.WorldSize}: the MPI library does not belong to this launcher. " +
                $"Start with the launcher of that library, or set {MpiLaunch.LibraryVariable} to the launcher's libmpi.");
        }
        return mpi;
    }

    /// <summary>Initializes MPI once per process with <paramref name="library"/>.</summary>
    public static MpiCollectives Initialize(MpiLibrary library, MpiOptions options)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(options.MaxElementsPerCall, 1);
        if (options.CollectiveTimeout <= TimeSpan.Zero) throw new ArgumentOutOfRangeException(nameof(options), "The collective timeout must be positive.");
        if (Interlocked.Exchange(ref s_initialized, 1) != 0)
            throw new InvalidOperationException("MPI is initialized once per process; reuse the existing MpiCollectives.");
        return new MpiCollectives(library, options);
    }

    /// <inheritdoc/>
    public int Rank { get; }

    /// <inheritdoc/>
    public int WorldSize { get; }

    /// <summary>The loaded library.</summary>
    public MpiLibrary Library => _library;

    /// <summary>The library's version line.</summary>
    public string Version { get; }

    /// <summary>The thread level MPI granted (3 = MPI_THREAD_MULTIPLE, which the watchdog's abort assumes).</summary>
    public int ThreadLevel { get; }

    /// <inheritdoc/>
    public string Description => $"MPI ({_library.Abi} ABI, {_library.Path}: {Version}), rank {Rank} of {WorldSize}";

    /// <summary>The timeout applied to each MPI call from now on.</summary>
    public TimeSpan CollectiveTimeout { get => _watchdog.Timeout; set => _watchdog.Timeout = value; }

    /// <summary>Number of MPI communication calls made so far (shows how buffers were split into pieces).</summary>
    public long NativeCallCount => Interlocked.Read(ref _nativeCalls);

    /// <inheritdoc/>
    public void Barrier()
    {
        lock (_callGate)
            using (Watch("MPI_Barrier")) _library.Barrier();
    }

    /// <inheritdoc/>
    public void AllReduceSum(float* buffer, long count)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (WorldSize == 1 || count == 0) return;
        lock (_callGate)
        {
            int r = WorldSize;
            // Each piece is split into R blocks of at most one call's worth; a piece that R does not divide is padded with zeros.
            long pieceMax = (long)_maxPerCall * r;
            long pieces = CallPieces.Count(count, pieceMax);
            for (long p = 0; p < pieces; p++)
            {
                long offset = p * pieceMax;
                long length = Math.Min(pieceMax, count - offset);
                int block = (int)((length + r - 1) / r);
                float* piece = buffer + offset;
                float* mine = _block.Get(block);
                if (length == (long)block * r)
                {
                    AlltoallOrderedSum(piece, mine, block);
                    using (Watch("MPI_Allgather")) _library.AllgatherFloat(mine, piece, block);
                }
                else
                {
                    float* padded = _pack.Get((long)block * r);
                    Buffer.MemoryCopy(piece, padded, length * sizeof(float), length * sizeof(float));
                    new Span<float>(padded + length, (int)((long)block * r - length)).Clear();
                    AlltoallOrderedSum(padded, mine, block);
                    using (Watch("MPI_Allgather")) _library.AllgatherFloat(mine, padded, block);
                    Buffer.MemoryCopy(padded, piece, length * sizeof(float), length * sizeof(float));
                }
            }
        }
    }

    /// <inheritdoc/>
    public void ReduceScatterBlockSum(float* send, float* block, long blockCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(blockCount);
        if (blockCount == 0) return;
        lock (_callGate)
        {
            int r = WorldSize;
            long pieces = CallPieces.Count(blockCount, _maxPerCall);
            for (long p = 0; p < pieces; p++)
            {
                var (offset, length) = CallPieces.Piece(blockCount, _maxPerCall, p);
                float* contiguous = send;
                if (pieces > 1)
                {
                    // Piece p of every destination block, packed so one MPI_Alltoall moves them.
                    contiguous = _pack.Get((long)length * r);
                    for (int d = 0; d < r; d++)
                        Buffer.MemoryCopy(send + d * blockCount + offset, contiguous + (long)d * length, (long)length * sizeof(float), (long)length * sizeof(float));
                }
                AlltoallOrderedSum(contiguous, block + offset, length);
            }
        }
    }

    /// <inheritdoc/>
    public void AllGather(float* block, float* all, long blockCount)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(blockCount);
        if (blockCount == 0) return;
        lock (_callGate)
        {
            int r = WorldSize;
            bool inPlace = block == all + Rank * blockCount;
            long pieces = CallPieces.Count(blockCount, _maxPerCall);
            if (pieces == 1)
            {
                int n = (int)blockCount;
                using (Watch("MPI_Allgather")) _library.AllgatherFloat(inPlace ? null : block, all, n);
                return;
            }
            for (long p = 0; p < pieces; p++)
            {
                var (offset, length) = CallPieces.Piece(blockCount, _maxPerCall, p);
                float* gathered = _pack.Get((long)length * r);
                float* source = block + offset;
                using (Watch("MPI_Allgather")) _library.AllgatherFloat(source, gathered, length);
                for (int d = 0; d < r; d++)
                    Buffer.MemoryCopy(gathered + (long)d * length, all + d * blockCount + offset, (long)length * sizeof(float), (long)length * sizeof(float));
            }
        }
    }

    /// <inheritdoc/>
    public void Broadcast(byte* buffer, long count, int root)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if ((uint)root >= (uint)WorldSize) throw new ArgumentOutOfRangeException(nameof(root), $"Root {root} is not a rank of this {WorldSize}-rank job.");
        lock (_callGate)
        {
            long pieces = CallPieces.Count(count, _maxPerCall);
            for (long p = 0; p < pieces; p++)
            {
                var (offset, length) = CallPieces.Piece(count, _maxPerCall, p);
                byte* piece = buffer + offset;
                using (Watch("MPI_Bcast")) _library.BroadcastBytes(piece, length, root);
            }
        }
    }

    /// <inheritdoc/>
    public void Abort(int exitCode, string message)
    {
        Console.Error.WriteLine(message);
        Console.Error.Flush();
        _library.Abort(exitCode);
        Environment.Exit(exitCode); // MPI_Abort does not return; this covers a library that does
    }

    /// <summary>Stops the watchdog and finalizes MPI.</summary>
    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        _watchdog.Dispose();
        if (_library.IsInitialized() && !_library.IsFinalized()) _library.FinalizeMpi();
        _block.Free();
        _pack.Free();
        _received.Free();
    }

    // One MPI_Alltoall of `length` floats per rank, then destination = Σ over source ranks 0..R−1 of what each sent us.
    private void AlltoallOrderedSum(float* send, float* destination, int length)
    {
        int r = WorldSize;
        float* received = _received.Get((long)length * r);
        using (Watch("MPI_Alltoall")) _library.AlltoallFloat(send, received, length);
        for (int d = 0; d < r; d++) _sources[d] = (nint)(received + (long)d * length);
        OrderedSum.Sum(destination, _sources, length, accumulate: false, _reductionThreads);
    }

    private WatchedCall Watch(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _watchdog.Begin(name);
        Interlocked.Increment(ref _nativeCalls);
        return new WatchedCall(_watchdog);
    }

    private readonly ref struct WatchedCall(CollectiveWatchdog watchdog)
    {
        public void Dispose() => watchdog.End();
    }

    // A native buffer that grows to the largest size asked for and is reused after that.
    private struct Scratch
    {
        private float* _pointer;
        private long _length;

        public float* Get(long needed)
        {
            if (needed <= _length) return _pointer;
            NativeMemory.Free(_pointer);
            _pointer = (float*)NativeMemory.Alloc((nuint)needed, sizeof(float));
            _length = needed;
            return _pointer;
        }

        public void Free()
        {
            NativeMemory.Free(_pointer);
            _pointer = null;
            _length = 0;
        }
    }
}
