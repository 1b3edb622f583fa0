// What the engine needs from a multi-process transport: rank, size and a few host-side collectives over float and byte buffers.
namespace L2L.Training.Distributed;

/// <summary>
/// Collectives over host memory between the processes (ranks) of one job. Every rank must call the same
/// collectives in the same order with the same counts. Calls are serialized: one collective at a time per process.
/// Buffers are given as pointers and 64-bit counts so a layer over 2^31 elements needs no special handling by the
/// caller; <see cref="HostCollectivesExtensions"/> adds span overloads.
/// </summary>
public unsafe interface IHostCollectives : IDisposable
{
    /// <summary>This process's rank, 0 ≤ Rank &lt; WorldSize.</summary>
    int Rank { get; }

    /// <summary>Number of ranks in the job.</summary>
    int WorldSize { get; }

    /// <summary>One line saying which transport (and MPI library) carries the collectives.</summary>
    string Description { get; }

    /// <summary>Blocks until every rank has reached this call.</summary>
    void Barrier();

    /// <summary>
    /// Replaces <paramref name="count"/> floats by their element-wise sum over all ranks; every rank ends with identical
    /// bits. The sum for each element is formed in rank order, ((x₀ + x₁) + x₂) + …, whatever the library or timing.
    /// </summary>
    void AllReduceSum(float* buffer, long count);

    /// <summary>
    /// <paramref name="send"/> holds WorldSize blocks of <paramref name="blockCount"/> floats; block r goes to rank r.
    /// <paramref name="block"/> receives, element by element, the sum in rank order of the blocks sent to this rank.
    /// The two buffers must not overlap.
    /// </summary>
    void ReduceScatterBlockSum(float* send, float* block, long blockCount);

    /// <summary>
    /// Gathers every rank's <paramref name="blockCount"/> floats into <paramref name="all"/> (WorldSize blocks, rank order).
    /// <paramref name="block"/> may be this rank's own block inside <paramref name="all"/>.
    /// </summary>
    void AllGather(float* block, float* all, long blockCount);

    /// <summary>Copies <paramref name="count"/> bytes from rank <paramref name="root"/> to every other rank.</summary>
    void Broadcast(byte* buffer, long count, int root);

    /// <summary>Writes <paramref name="message"/> to stderr and ends every rank of the job with exit code <paramref name="exitCode"/>.</summary>
    void Abort(int exitCode, string message);
}

/// <summary>Span overloads of <see cref="IHostCollectives"/>.</summary>
public static unsafe class HostCollectivesExtensions
{
    /// <summary>Span form of <see cref="IHostCollectives.AllReduceSum"/>.</summary>
    public static void AllReduceSum(this IHostCollectives collectives, Span<float> buffer)
    {
        fixed (float* p = buffer) collectives.AllReduceSum(p, buffer.Length);
    }

    /// <summary>Span form of <see cref="IHostCollectives.ReduceScatterBlockSum"/>; <paramref name="send"/> is WorldSize × <paramref name="block"/> long.</summary>
    public static void ReduceScatterBlockSum(this IHostCollectives collectives, ReadOnlySpan<float> send, Span<float> block)
    {
        if (send.Length != (long)block.Length * collectives.WorldSize)
            throw new ArgumentException($"The send buffer holds {send.Length} floats; reduce-scatter needs world size ({collectives.WorldSize}) × block ({block.Length}).", nameof(send));
        fixed (float* s = send)
        fixed (float* b = block)
            collectives.ReduceScatterBlockSum(s, b, block.Length);
    }

    /// <summary>Span form of <see cref="IHostCollectives.AllGather"/>; <paramref name="all"/> is WorldSize × <paramref name="block"/> long.</summary>
    public static void AllGather(this IHostCollectives collectives, ReadOnlySpan<float> block, Span<float> all)
    {
        if (all.Length != (long)block.Length * collectives.WorldSize)
            throw new ArgumentException($"The gather buffer holds {all.Length} floats; all-gather needs world size ({collectives.WorldSize}) × block ({block.Length}).", nameof(all));
        fixed (float* b = block)
        fixed (float* a = all)
            collectives.AllGather(b, a, block.Length);
    }

    /// <summary>Span form of <see cref="IHostCollectives.Broadcast"/>.</summary>
    public static void Broadcast(this IHostCollectives collectives, Span<byte> buffer, int root)
    {
        fixed (byte* p = buffer) collectives.Broadcast(p, buffer.Length, root);
    }
}
