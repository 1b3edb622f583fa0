// Checks the generated PTX of the attention and GEMM kernels' hot loops: no 64-bit division there, and enough
// multiply-adds per shared-memory load in the GEMM (see PtxLoop for how loops are found).
using System.Reflection;
using ILGPU;
using ILGPU.Algorithms;
using ILGPU.Backends.EntryPoints;
using ILGPU.Backends.PTX;
using ILGPU.Runtime;
using ILGPU.Runtime.Cuda;
using L2L.Kernels;
using Xunit;

namespace L2L.Kernels.Tests;

public sealed class PtxHotLoopTests : IDisposable
{
    private readonly Context _context = Context.Create(b => b.Optimize(OptimizationLevel.O2).EnableAlgorithms());
    private readonly PTXBackend _backend;
    private readonly ITestOutputHelper _output;

    public PtxHotLoopTests(ITestOutputHelper output)
    {
        _output = output;
        _backend = new PTXBackend(_context, CudaArchitecture.SM_80, CudaInstructionSet.ISA_71, null!);
    }

    public static TheoryData<string> AttentionKernelNames() => Names(typeof(AttentionKernels));

    public static TheoryData<string> GemmKernelNames() => Names(typeof(GemmKernels));

    private static TheoryData<string> Names(Type type)
    {
        var data = new TheoryData<string>();
        foreach (var m in type.GetMethods(BindingFlags.Public | BindingFlags.Static)
                     .Where(m => m.Name.EndsWith("Kernel", StringComparison.Ordinal) && !m.IsGenericMethodDefinition))
            data.Add(m.Name);
        return data;
    }

    [Theory]
    [MemberData(nameof(AttentionKernelNames))]
    public void AttentionLoopsHaveNo64BitDivision(string kernel)
    {
        var ptx = Compile(typeof(AttentionKernels), kernel);
        AssertNoDivisionInInnermostLoops(kernel, ptx);
        // The row and tiled kernels decompose indices in 32 bits, so no 64-bit division appears at all.
        Assert.DoesNotMatch(@"\b(?:div|rem)(?:\.\w+)*\.[su]64\b", ptx);
    }

    [Theory]
    [MemberData(nameof(GemmKernelNames))]
    public void GemmLoopsHaveNo64BitDivision(string kernel) =>
        AssertNoDivisionInInnermostLoops(kernel, Compile(typeof(GemmKernels), kernel));

    [Theory]
    [InlineData(nameof(GemmKernels.GemmLargeTilesNNKernel))]
    [InlineData(nameof(GemmKernels.GemmLargeTilesNTKernel))]
    [InlineData(nameof(GemmKernels.GemmLargeTilesTNKernel))]
    public void GpuGemmInnerLoopDoesAtLeastFourMultiplyAddsPerSharedLoad(string kernel)
    {
        var ptx = Compile(typeof(GemmKernels), kernel);
        var hot = PtxLoop.Hot(ptx);
        _output.WriteLine($"{kernel}: hot loop {hot.InstructionCount} instructions, {hot.MultiplyAdds} multiply-adds, {hot.SharedLoads} shared loads, " +
            $"{(double)hot.InstructionCount / hot.MultiplyAdds:F2} instructions per multiply-add");
        Assert.Equal(64, hot.MultiplyAdds); // the 8 x 8 register tile, once per k
        Assert.True(hot.MultiplyAdds >= 4 * hot.SharedLoads, $"{kernel}: {hot.MultiplyAdds} multiply-adds for {hot.SharedLoads} shared loads");
        Assert.All(hot.Instructions.Where(i => i.StartsWith("ld.shared", StringComparison.Ordinal)), i => Assert.StartsWith("ld.shared.v4.f32", i));
        Assert.Empty(hot.Divisions64);
        Assert.DoesNotContain(".local", ptx); // no spilled register tile
    }

    [Theory]
    [InlineData(nameof(GemmKernels.GemmLargeTilesNNGenericKernel), false)]
    [InlineData(nameof(GemmKernels.GemmLargeTilesTNGenericKernel), true)]
    [InlineData(nameof(GemmKernels.GemmLargeTilesNTGenericKernel), false)]
    public void SixteenBitGpuGemmKeepsTheFp32InnerLoop(string kernel, bool fp32Output)
    {
        // BF16 operands are widened on their way into the FP32 shared tiles, so the hot loop is the FP32 one.
        var method = typeof(GemmKernels).GetMethod(kernel, BindingFlags.Public | BindingFlags.Static)!
            .MakeGenericMethod(typeof(Bf16), typeof(Bf16Storage), fp32Output ? typeof(float) : typeof(Bf16), fp32Output ? typeof(Fp32Storage) : typeof(Bf16Storage));
        var ptx = Compile(method);
        var hot = PtxLoop.Hot(ptx);
        _output.WriteLine($"{kernel}<Bf16>: hot loop {hot.InstructionCount} instructions, {hot.MultiplyAdds} multiply-adds, {hot.SharedLoads} shared loads");
        Assert.Equal(64, hot.MultiplyAdds);
        Assert.All(hot.Instructions.Where(i => i.StartsWith("ld.shared", StringComparison.Ordinal)), i => Assert.StartsWith("ld.shared.v4.f32", i));
        Assert.Empty(hot.Divisions64);
        Assert.DoesNotContain(".local", ptx);
    }

    [Fact]
    public void LoopFinderFindsNestedLoopsAndCountsMultiplyAdds()
    {
        const string ptx = """
            L_1:
            	setp.ge.s32	%p1, %r1, %r2;
            	@%p1 bra.uni	L_3;
            L_2:
            	ld.shared.f32	%f1, [%rd1];
            	mul.f32	%f2, %f1, %f1;
            	add.f32	%f3, %f4, %f2;
            	mul.f32	%f12, %f1, %f1;
            	fma.rn.f32	%f5, %f1, %f1, %f3;
            	rem.s64	%rd2, %rd3, %rd4;
            	@%p2 bra	L_2;
            	bra.uni	L_1;
            L_3:
            	ret;
            """;
        var all = PtxLoop.All(ptx);
        Assert.Equal(2, all.Count);
        var inner = Assert.Single(PtxLoop.Innermost(ptx));
        Assert.Equal(3, inner.FirstLine);
        Assert.Equal(2, inner.MultiplyAdds); // the fma, and the mul whose result the add takes; %f12 is not added
        Assert.Equal(1, inner.SharedLoads);
        Assert.Single(inner.Divisions64);
        Assert.Equal(inner.FirstLine, PtxLoop.Hot(ptx).FirstLine);
    }

    private void AssertNoDivisionInInnermostLoops(string kernel, string ptx)
    {
        var inner = PtxLoop.Innermost(ptx);
        Assert.NotEmpty(inner);
        var hot = PtxLoop.Hot(ptx);
        _output.WriteLine($"{kernel}: {inner.Count} innermost loops; hot loop lines {hot.FirstLine}-{hot.LastLine}: {hot.InstructionCount} instructions, " +
            $"{hot.MultiplyAdds} multiply-adds, {hot.SharedLoads} shared loads");
        foreach (var loop in inner)
            Assert.True(loop.Divisions64.Count == 0,
                $"{kernel}: the loop at PTX lines {loop.FirstLine}-{loop.LastLine} divides in 64 bits: {string.Join("; ", loop.Divisions64)}");
    }

    private string Compile(Type type, string name) =>
        Compile(type.GetMethods(BindingFlags.Public | BindingFlags.Static).Single(m => m.Name == name && !m.IsGenericMethodDefinition));

    private string Compile(MethodInfo method)
    {
        var parameters = method.GetParameters();
        var implicitlyGrouped = parameters.Length > 0 && parameters[0].ParameterType.Name is "Index1D" or "Index2D" or "Index3D";
        var entry = implicitlyGrouped
            ? EntryPointDescription.FromImplicitlyGroupedKernel(method)
            : EntryPointDescription.FromExplicitlyGroupedKernel(method);
        return ((PTXCompiledKernel)_backend.Compile(entry, KernelSpecialization.Empty)).PTXAssembly;
    }

    public void Dispose()
    {
        _backend.Dispose();
        _context.Dispose();
    }
}
