// Deterministic element-wise sums of several float buffers (one per device or per rank), parallel over fixed chunks.
using System.Numerics;

namespace L2L.Training.Distributed;

/// <summary>
/// Sums N source buffers element by element in source order, ((s₀ + s₁) + s₂) + …, rounding to float after each add.
/// Each element's order is fixed, so the result has the same bits for any thread count and any timing; threads only
/// split the buffer into fixed chunks.
/// </summary>
public static unsafe class OrderedSum
{
    /// <summary>Elements per parallel chunk (64 KiB of floats per source): small enough to balance, large enough to amortize.</summary>
    public const int ChunkElements = 16 * 1024;

    /// <summary>
    /// destination[i] = Σ sources[d][i] in source order (or destination[i] + Σ … when <paramref name="accumulate"/>, with
    /// destination's own value first). The destination may be one of the sources only if it is the first.
    /// </summary>
    /// <param name="destination">Where the sums go.</param>
    /// <param name="sources">Addresses of the source buffers, each of <paramref name="count"/> floats, in summation order.</param>
    /// <param name="count">Elements per buffer.</param>
    /// <param name="accumulate">Add to the destination's values instead of replacing them.</param>
    /// <param name="maxThreads">Threads to use; 1 runs on the calling thread; ≤ 0 uses every core.</param>
    public static void Sum(float* destination, ReadOnlySpan<nint> sources, long count, bool accumulate = false, int maxThreads = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(count);
        if (sources.Length == 0 && !accumulate)
        {
            for (long i = 0; i < count; i++) destination[i] = 0f;
            return;
        }
        if (count == 0 || sources.Length == 0) return;

        nint[] src = sources.ToArray();
        long chunks = (count - 1) / ChunkElements + 1;
        int threads = maxThreads <= 0 ? Environment.ProcessorCount : maxThreads;
        if (threads == 1 || chunks == 1)
        {
            for (long c = 0; c < chunks; c++) SumChunk(destination, src, count, c, accumulate);
            return;
        }
        nint dst = (nint)destination;
        System.Threading.Tasks.Parallel.For(0L, chunks, new ParallelOptions { MaxDegreeOfParallelism = threads },
            c => SumChunk((float*)dst, src, count, c, accumulate));
    }

    /// <summary>Array form of <see cref="Sum(float*, ReadOnlySpan{nint}, long, bool, int)"/>: every source is as long as the destination.</summary>
    public static void Sum(float[] destination, IReadOnlyList<float[]> sources, bool accumulate = false, int maxThreads = 0)
    {
        var handles = new System.Runtime.InteropServices.GCHandle[sources.Count];
        var pointers = new nint[sources.Count];
        try
        {
            for (int d = 0; d < sources.Count; d++)
            {
                if (sources[d].Length != destination.Length)
                    throw new ArgumentException($"Source {d} holds {sources[d].Length} floats; the destination holds {destination.Length}.", nameof(sources));
                handles[d] = System.Runtime.InteropServices.GCHandle.Alloc(sources[d], System.Runtime.InteropServices.GCHandleType.Pinned);
                pointers[d] = handles[d].AddrOfPinnedObject();
            }
            fixed (float* dst = destination) Sum(dst, pointers, destination.Length, accumulate, maxThreads);
        }
        finally
        {
            foreach (var h in handles) if (h.IsAllocated) h.Free();
        }
    }

    private static void SumChunk(float* destination, nint[] sources, long count, long chunk, bool accumulate)
    {
        long start = chunk * ChunkElements;
        int n = (int)Math.Min(ChunkElements, count - start);
        float* dst = destination + start;
        int i = 0;
        // Vector lanes are independent elements, each summed in the same order as the scalar tail below.
        if (Vector.IsHardwareAccelerated)
        {
            int width = Vector<float>.Count;
            for (; i <= n - width; i += width)
            {
                Vector<float> acc;
                int d = 0;
                if (accumulate) acc = Vector.Load(dst + i);
                else { acc = Vector.Load((float*)sources[0] + start + i); d = 1; }
                for (; d < sources.Length; d++) acc += Vector.Load((float*)sources[d] + start + i);
                acc.Store(dst + i);
            }
        }
        for (; i < n; i++)
        {
            float acc;
            int d = 0;
            if (accumulate) acc = dst[i];
            else { acc = ((float*)sources[0])[start + i]; d = 1; }
            for (; d < sources.Length; d++) acc += ((float*)sources[d])[start + i];
            dst[i] = acc;
        }
    }
}
