// Whole-array reductions (sum, sum of squares) in two deterministic stages, scaling, and the
// group-wide shared-memory reductions the row-wise kernels (layernorm, cross-entropy) build on.
using System.Runtime.CompilerServices;
using ILGPU;
using ILGPU.Algorithms;

namespace L2L.Kernels;

/// <summary>
/// Reductions of a whole array to one value. Stage one (<see cref="SumPartialsKernel"/>,
/// <see cref="SumOfSquaresPartialsKernel"/>) leaves one partial per group; stage two
/// (<see cref="FinishSumKernel"/>) adds the partials in one group. No atomics: for a given launch the
/// order of additions is fixed, so the result is the same bit for bit on every run.
/// Group size at most <see cref="GroupReduce.MaxGroupSize"/>.
/// </summary>
public static class ReduceKernels
{
    /// <summary>
    /// <c>partials[g] = sum of input[i]</c> over the elements group <c>g</c> visits in a grid-stride loop.
    /// Shapes: <c>input</c> (N), <c>partials</c> (at least <c>Grid.DimX</c>).
    /// </summary>
    public static void SumPartialsKernel(ArrayView<float> input, ArrayView<float> partials) =>
        SumPartialsGenericKernel<float, Fp32Storage>(input, partials);

    /// <summary><see cref="SumPartialsKernel"/> of an input in any storage type, widened and summed in FP32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SumPartialsGenericKernel<T, S>(ArrayView<T> input, ArrayView<float> partials)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        long stride = Grid.DimX * Group.DimX;
        float acc = 0f;
        for (long i = Grid.GlobalIndex.X; i < input.Length; i += stride)
            acc += default(S).ToFloat(input[i]);
        float total = GroupReduce.Sum(shared, acc);
        if (Group.IdxX == 0)
            partials[Grid.IdxX] = total;
    }

    /// <summary>
    /// <c>partials[g] = sum of input[i]^2</c> over the elements group <c>g</c> visits in a grid-stride loop.
    /// Shapes: <c>input</c> (N), <c>partials</c> (at least <c>Grid.DimX</c>).
    /// </summary>
    public static void SumOfSquaresPartialsKernel(ArrayView<float> input, ArrayView<float> partials) =>
        SumOfSquaresPartialsGenericKernel<float, Fp32Storage>(input, partials);

    /// <summary><see cref="SumOfSquaresPartialsKernel"/> of an input in any storage type, widened, squared and summed in FP32.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SumOfSquaresPartialsGenericKernel<T, S>(ArrayView<T> input, ArrayView<float> partials)
        where T : unmanaged where S : struct, IStorage<T>
    {
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        long stride = Grid.DimX * Group.DimX;
        float acc = 0f;
        for (long i = Grid.GlobalIndex.X; i < input.Length; i += stride)
        {
            float x = default(S).ToFloat(input[i]);
            acc += x * x;
        }
        float total = GroupReduce.Sum(shared, acc);
        if (Group.IdxX == 0)
            partials[Grid.IdxX] = total;
    }

    /// <summary>
    /// <c>result[0] = sum of partials[0 .. count)</c>. Launch exactly one group.
    /// Shapes: <c>result</c> (1), <c>partials</c> (at least <c>count</c>); <c>count</c> may be 0.
    /// </summary>
    public static void FinishSumKernel(ArrayView<float> result, ArrayView<float> partials, int count)
    {
        var shared = SharedMemory.Allocate<float>(GroupReduce.MaxGroupSize);
        float acc = 0f;
        for (int i = Group.IdxX; i < count; i += Group.DimX)
            acc += partials[i];
        float total = GroupReduce.Sum(shared, acc);
        if (Group.IdxX == 0)
            result[0] = total;
    }

    /// <summary><c>x *= factor</c>. Shapes: <c>x</c> (N).</summary>
    public static void ScaleKernel(ArrayView<float> x, float factor)
    {
        long stride = Grid.DimX * Group.DimX;
        for (long i = Grid.GlobalIndex.X; i < x.Length; i += stride)
            x[i] *= factor;
    }
}

/// <summary>
/// Reductions across one group through shared memory and <see cref="Group.Barrier"/> (no warp
/// shuffles, so OpenCL gets the same code). Correct for any group size up to
/// <see cref="MaxGroupSize"/>, powers of two or not. Every thread of the group must call them
/// (they contain barriers), and every thread receives the result.
/// </summary>
public static class GroupReduce
{
    /// <summary>The largest group the reductions (and the kernels that allocate shared memory for them) support.</summary>
    public const int MaxGroupSize = 1024;

    /// <summary>The sum of <paramref name="value"/> over the group. <paramref name="shared"/> holds at least <c>Group.DimX</c> floats.</summary>
    public static float Sum(ArrayView<float> shared, float value)
    {
        int tid = Group.IdxX;
        int n = Group.DimX;
        shared[tid] = value;
        Group.Barrier();
        int p = FloorPowerOfTwo(n);
        // Fold the tail beyond the largest power of two first, so the tree below always halves evenly.
        if (tid < n - p)
            shared[tid] += shared[tid + p];
        Group.Barrier();
        for (int s = p / 2; s > 0; s /= 2)
        {
            if (tid < s)
                shared[tid] += shared[tid + s];
            Group.Barrier();
        }
        float result = shared[0];
        // Keeps a following reduction from overwriting shared[0] before every thread has read it.
        Group.Barrier();
        return result;
    }

    /// <summary>The maximum of <paramref name="value"/> over the group. <paramref name="shared"/> holds at least <c>Group.DimX</c> floats.</summary>
    public static float Max(ArrayView<float> shared, float value)
    {
        int tid = Group.IdxX;
        int n = Group.DimX;
        shared[tid] = value;
        Group.Barrier();
        int p = FloorPowerOfTwo(n);
        if (tid < n - p)
            shared[tid] = XMath.Max(shared[tid], shared[tid + p]);
        Group.Barrier();
        for (int s = p / 2; s > 0; s /= 2)
        {
            if (tid < s)
                shared[tid] = XMath.Max(shared[tid], shared[tid + s]);
            Group.Barrier();
        }
        float result = shared[0];
        Group.Barrier();
        return result;
    }

    /// <summary>The largest power of two not above <paramref name="n"/> (n &gt;= 1).</summary>
    public static int FloorPowerOfTwo(int n)
    {
        int p = 1;
        while (p * 2 <= n)
            p *= 2;
        return p;
    }
}
